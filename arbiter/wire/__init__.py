"""What travels on the bus, and all a client or worker in another language must know: MDP/0.1
frames, the JSON envelope, event topics. docs/PROTOCOL.md is the prose of this package.

May import: nothing of Arbiter.
"""
