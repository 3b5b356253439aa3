"""Compiling bundles: versions, and errors that name file, line and column."""

from __future__ import annotations

import pytest

from broker.core.policy import PolicyError, bundle_version, compile_bundle

from .helpers import CATALOGUE, GROUPS, bundle, files, shipped, shipped_files

PERMIT = """
[[rule]]
id = "ok"
effect = "permit"
reason = "fine"
recipient_roles = ["police"]
"""


def test_shipped_bundle_compiles_with_the_whole_catalogue() -> None:
    b = shipped()
    interpol = {"red", "yellow", "blue", "black", "green", "orange", "purple", "un_special"}
    assert {f"interpol.{k}" for k in interpol} | {"interpol.diffusion"} <= set(b.kinds)
    sis = {"art26", "art32", "art34", "art36", "art38", "art40", "refusal_of_entry", "return"}
    assert {f"sis.{k}" for k in sis} <= set(b.kinds)
    assert {"schengen", "eu", "interpol", "coordination_hubs"} <= set(b.groups)
    assert len(b.groups["interpol"].countries) > 190
    files_ = {r.file for r in b.rules}
    assert len(files_) >= 5  # rules split by topic
    for r in b.rules:
        assert r.id and r.reason and r.description
    for k in b.kinds.values():
        assert 0 < k.review_days <= k.retention_days


def test_version_is_sha256_of_canonical_bytes_and_stable() -> None:
    f = shipped_files()
    v = compile_bundle(f).version
    assert len(v) == 64 and int(v, 16) >= 0
    assert v == bundle_version(dict(reversed(list(f.items()))))  # order of the mapping
    assert compile_bundle(dict(f)).version == v
    changed = dict(f)
    changed["groups.toml"] = f["groups.toml"] + b"\n"
    assert compile_bundle(changed).version != v
    # moving bytes between files changes the version (length-prefixed paths and contents)
    a = {"x": b"ab", "y": b"c"}
    assert bundle_version(a) != bundle_version({"x": b"a", "y": b"bc"})


def located(rules: str | dict[str, str], **kw: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        bundle(rules, **kw)
    err = info.value
    assert err.file and err.line and err.column, str(err)
    assert str(err).startswith(f"{err.file}:{err.line}:{err.column}: ")
    return err


def line_of(text: str, n: int) -> str:
    return text.splitlines()[n - 1]


def test_toml_syntax_error_has_line_and_column() -> None:
    text = '[[rule]]\nid = "x"\neffect = \n'
    err = located(text)
    assert (err.file, err.line) == ("rules/r.toml", 3)
    assert "invalid TOML" in err.message


def test_unknown_group_in_rule_points_at_the_group() -> None:
    text = PERMIT + 'recipient_groups = ["g1", "nowhere"]\n'
    err = located(text)
    assert err.file == "rules/r.toml"
    assert "nowhere" in err.message and "unknown group" in err.message
    assert line_of(text, err.line).startswith("recipient_groups")
    assert line_of(text, err.line)[err.column - 1 :].startswith('"nowhere"')


def test_empty_list_is_refused_at_its_key() -> None:
    text = PERMIT + "kinds = []\n"
    err = located(text)
    assert "empty list" in err.message and "match nobody" in err.message
    assert line_of(text, err.line).startswith("kinds")


def test_unknown_key_kind_section_role_and_evaluation() -> None:
    for extra, needle in (
        ('recipent_roles = ["police"]\n', "recipent_roles"),
        ('kinds = ["k9"]\n', "k9"),
        ('sections = ["zz"]\n', "zz"),
        ('unless = { recipient_roles = ["pilot"] }\n', "pilot"),
        ('evaluation = ["D1"]\n', "D1"),
        ('tlp = ["PINK"]\n', "PINK"),
    ):
        text = PERMIT + extra
        err = located(text)
        assert needle in err.message, err.message
        assert needle in line_of(text, err.line), (needle, err)


def test_rule_errors_in_second_file_name_that_file() -> None:
    err = located(
        {
            "rules/a.toml": PERMIT,
            "rules/b.toml": PERMIT.replace('"ok"', '"ok2"')
            + ('recipient_countries = ["France"]\n'),
        }
    )
    assert err.file == "rules/b.toml" and "France" in err.message


def test_duplicate_reserved_and_missing_ids() -> None:
    err = located({"rules/a.toml": PERMIT, "rules/b.toml": PERMIT})
    assert err.file == "rules/b.toml" and "duplicate rule id 'ok'" in err.message
    assert "rules/a.toml" in err.message
    err = located(PERMIT.replace('"ok"', '"registry.x"'))
    assert "engine's own" in err.message
    err = located('[[rule]]\neffect = "forbid"\nreason = "r"\n')
    assert "no id" in err.message and err.line == 1


def test_permit_must_name_whom_it_permits() -> None:
    err = located('[[rule]]\nid = "all"\neffect = "permit"\nreason = "r"\nkinds = ["k1"]\n')
    assert "must say whom it permits" in err.message and err.line == 3


def test_oblige_and_hold_shapes() -> None:
    text = '[[rule]]\nid = "o"\neffect = "oblige"\nreason = "r"\nobligation = "fly"\ntext = "x"\n'
    assert "obligation must be one of" in located(text).message
    text = (
        '[[rule]]\nid = "o"\neffect = "oblige"\nreason = "r"\n'
        'obligation = "acknowledge"\ntext = "see {nobody}"\n'
    )
    err = located(text)
    assert "{nobody}" in err.message and err.line == 6
    text = (
        '[[rule]]\nid = "o"\neffect = "oblige"\nreason = "r"\n'
        'obligation = "max_retention_days"\ntext = "x"\n'
    )
    assert "days must be a positive integer" in located(text).message
    text = '[[rule]]\nid = "h"\neffect = "hold"\nreason = "r"\nembargoed = false\n'
    err = located(text)
    assert "embargo" in err.message and err.line == 5
    text = PERMIT + 'text = "x"\n'
    assert "oblige" in located(text).message


def test_empty_group_is_refused_with_its_location() -> None:
    groups = GROUPS + '\n[groups.nobody]\ntitle = "oops"\ncountries = []\n'
    err = located(PERMIT, groups=groups)
    assert err.file == "groups.toml" and "never means everyone" in err.message
    assert line_of(groups, err.line) == "[groups.nobody]"


def test_catalogue_errors_are_located() -> None:
    cat = CATALOGUE.replace('purposes = ["p1", "p2"]', 'purposes = ["p1", "p7"]')
    err = located(PERMIT, catalogue=cat)
    assert err.file == "catalogue.toml" and "p7" in err.message
    assert line_of(cat, err.line).startswith("purposes") and "p7" in line_of(cat, err.line)
    cat = CATALOGUE.replace("retention_days = 100", "retention_days = 10")
    err = located(PERMIT, catalogue=cat)
    assert "review_days" in err.message and line_of(cat, err.line).startswith("review_days")
    cat = CATALOGUE.replace("[kinds.k1]\n", "[kinds.k1]\ncolour = 1\n")
    err = located(PERMIT, catalogue=cat)
    assert "colour" in err.message and line_of(cat, err.line).startswith("colour")


def test_bundle_shape_errors() -> None:
    with pytest.raises(PolicyError, match=r"no catalogue\.toml"):
        compile_bundle({"rules/r.toml": PERMIT.encode()})
    with pytest.raises(PolicyError, match="no rules"):
        compile_bundle({"catalogue.toml": CATALOGUE.encode()})
    f = files(PERMIT)
    f["extra.toml"] = b"x = 1\n"
    with pytest.raises(PolicyError, match="unexpected file") as info:
        compile_bundle(f)
    assert info.value.file == "extra.toml"
    f = files(PERMIT)
    f["rules/r.toml"] = b"\xff\xfe"
    with pytest.raises(PolicyError, match="not UTF-8"):
        compile_bundle(f)


def test_a_readme_in_the_bundle_is_hashed_not_compiled() -> None:
    f = files(PERMIT)
    with_readme = {**f, "README.md": b"# notes"}
    assert compile_bundle(with_readme).version != compile_bundle(f).version
