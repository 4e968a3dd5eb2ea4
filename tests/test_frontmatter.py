from arbiter.project import frontmatter


def test_plain_frontmatter_and_body_line():
    fm = frontmatter.parse("---\nname: a\ntags: [x, y]\n---\n\n# Title\nbody\n")
    assert fm.meta == {"name": "a", "tags": ["x", "y"]}
    assert fm.body.startswith("# Title")
    assert fm.body_line == 6
    assert fm.notes == []


def test_missing_frontmatter_is_noted_not_fatal():
    fm = frontmatter.parse("# Only a heading\n\nSome prose here.\n")
    assert fm.meta == {}
    assert fm.notes == [(1, "no frontmatter")]
    assert frontmatter.first_paragraph(fm.body) == "Some prose here."


def test_unclosed_frontmatter():
    fm = frontmatter.parse("---\nname: a\nno end\n")
    assert fm.meta == {}
    assert "never closed" in fm.notes[0][1]


def test_unquoted_colon_is_read_leniently_with_line():
    text = (
        "---\nname: memory\ndescription: Does things: a, b and c\nmodel: opus\ntools:\n  - Read\n  - Write\n---\nbody\n"
    )
    fm = frontmatter.parse(text)
    assert fm.meta["name"] == "memory"
    assert fm.meta["description"] == "Does things: a, b and c"
    assert fm.meta["model"] == "opus"
    assert fm.meta["tools"] == ["Read", "Write"]
    line, message = fm.notes[0]
    assert line == 3 and "not valid YAML" in message


def test_non_mapping_frontmatter():
    fm = frontmatter.parse("---\n- a\n- b\n---\nx\n")
    assert fm.meta == {}
    assert "not a mapping" in fm.notes[0][1]


def test_as_list_splits_strings():
    assert frontmatter.as_list("a, b ,c") == (["a", "b", "c"], True)
    assert frontmatter.as_list(["a", 1, None]) == (["a", "1"], False)
    assert frontmatter.as_list(None) == ([], False)
