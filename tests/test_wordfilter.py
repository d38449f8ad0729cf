"""The chat word filter: folding, matching, severity and masking (pure, no I/O)."""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.moderation.wordfilter import Term, Verdict, WordFilter, normalize


def fullwidth(text: str) -> str:
    return text.translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})


def test_normalize_folds_and_maps_back_to_the_original() -> None:
    assert normalize("A b.Ｃ") == ("abc", [0, 2, 4])
    assert normalize("") == ("", [])
    assert normalize(" .,!\u200b\u200c\u200d\ufeff😀") == ("", [])
    # one code point can fold to several letters; each maps back to it
    assert normalize("Straße") == ("strasse", [0, 1, 2, 3, 4, 4, 5])
    assert normalize("ﬁn") == ("fin", [0, 0, 1])
    assert normalize("e\u0301té") == ("ete", [0, 2, 3])
    assert normalize("①½") == ("112", [0, 1, 1])


@pytest.mark.parametrize(
    "text",
    [
        "spam",
        "SPAM",
        "sPaM",
        "buy spam now",
        "ｓｐａｍ",
        "ＳＰＡＭ",
        "s p a m",
        "S.P.A.M",
        "s-p_a*m",
        "s\tp\na\u3000m",
        "s\u200bp\u200ca\u200dm",
        "\ufeffs\ufeffpam",
        "s😀p😀a😀m",
        "spåm",
        "s\u0336p\u0336a\u0336m\u0336",
        "xxspamxx",
        "ѕрам",  # Cyrillic look-alikes
        "SPΑM",  # a Greek capital alpha
    ],
)
def test_matches_through_case_width_and_separators(text: str) -> None:
    verdict = WordFilter([Term("spam", "block")]).check(text)
    assert verdict == Verdict("block", text, ("spam",))


@pytest.mark.parametrize("text", ["", "spa", "sp4m", "maps", "s pa", "спам", "hello world"])
def test_no_match(text: str) -> None:
    assert WordFilter([Term("spam", "block")]).check(text) == Verdict("allow", text, ())


def test_terms_are_folded_like_the_text() -> None:
    wf = WordFilter([Term("Ｓ.P a-M", "flag"), Term("Straße", "block")])
    assert wf.check("spam").matched == ("Ｓ.P a-M",)
    assert wf.check("spam").action == "flag"
    assert wf.check("STRASSE").action == "block"
    assert wf.check("stra\u00dfe").action == "block"


def test_substring_matching_is_a_known_limitation() -> None:
    wf = WordFilter([Term("ass", "flag"), Term("shit", "flag")])
    assert wf.check("first class").matched == ("ass",)
    assert wf.check("this hit").matched == ("shit",)


def test_mask_stars_the_whole_original_span_and_nothing_else() -> None:
    wf = WordFilter([Term("spam", "mask")])
    text = "hello S.p a\u200bM, world"
    verdict = wf.check(text)
    assert verdict == Verdict("mask", "hello *******, world", ("spam",))
    assert len(verdict.text) == len(text)


def test_mask_every_occurrence_and_multi_letter_folds() -> None:
    wf = WordFilter([Term("spam", "mask"), Term("fin", "mask"), Term("ss", "mask")])
    assert wf.check("spam? SPAM! ｓｐａｍ.").text == "****? ****! ****."
    assert wf.check("ﬁn!").text == "**!"
    assert wf.check("Straße").text == "Stra*e"


def test_mask_covers_accents_trailing_the_last_letter() -> None:
    wf = WordFilter([Term("spam", "mask")])
    assert wf.check("spam\u0301\u0301 ok").text == "****** ok"
    assert wf.check("spa\u0301m ok").text == "***** ok"


def test_most_severe_action_wins() -> None:
    wf = WordFilter([Term("aaa", "flag"), Term("bbb", "mask"), Term("ccc", "block")])
    assert wf.check("aaa") == Verdict("flag", "aaa", ("aaa",))
    assert wf.check("bbb aaa") == Verdict("mask", "*** aaa", ("aaa", "bbb"))
    assert wf.check("ccc bbb aaa") == Verdict("block", "ccc bbb aaa", ("aaa", "bbb", "ccc"))
    assert wf.check("ddd") == Verdict("allow", "ddd", ())


def test_terms_folding_to_the_same_key_all_count() -> None:
    wf = WordFilter([Term("spam", "flag"), Term("S P A M", "block"), Term("spam", "flag")])
    assert wf.terms == (Term("spam", "flag"), Term("S P A M", "block"))
    assert wf.check("sp.am") == Verdict("block", "sp.am", ("S P A M", "spam"))
    both = WordFilter([Term("spam", "flag"), Term("SPAM", "mask")])
    assert both.check("a spam") == Verdict("mask", "a ****", ("SPAM", "spam"))


def test_overlapping_and_nested_terms() -> None:
    wf = WordFilter([Term("abc", "mask"), Term("bcd", "mask")])
    assert wf.check("xabcdx") == Verdict("mask", "x****x", ("abc", "bcd"))
    nested = WordFilter([Term("he", "mask"), Term("hello", "flag"), Term("ll", "mask")])
    assert nested.check("Hello!") == Verdict("mask", "****o!", ("he", "hello", "ll"))
    assert nested.check("hell") == Verdict("mask", "****", ("he", "ll"))


def test_empty_text_and_empty_filter() -> None:
    assert WordFilter([Term("spam", "block")]).check("") == Verdict("allow", "", ())
    assert WordFilter([]).check("spam") == Verdict("allow", "spam", ())


@pytest.mark.parametrize("term", ["", " ", "!!!", "\u200b\ufeff", "😀", "\u0301"])
def test_term_folding_to_nothing_is_refused(term: str) -> None:
    with pytest.raises(ValueError, match="no letters or digits"):
        WordFilter([Term("fine", "flag"), Term(term, "block")])


def test_term_is_frozen_and_checks_its_action() -> None:
    with pytest.raises(ValueError, match="unknown filter action"):
        Term("spam", "nuke")  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Term("spam", "flag").text = "eggs"  # type: ignore[misc]


# Properties ----------------------------------------------------------------------------

SEPARATORS = list(" .-_*!’·😀\t\n\u3000\u200b\u200c\u200d\u2060\ufeff")
LETTER_FORMS: list[Callable[[str], str]] = [
    str.lower,
    str.upper,
    lambda c: fullwidth(c.lower()),
    lambda c: fullwidth(c.upper()),
]

terms = st.text(alphabet="abcxyz", min_size=1, max_size=8)
actions = st.sampled_from(["block", "mask", "flag"])


@st.composite
def disguised(draw: st.DrawFn, term: str) -> str:
    """``term`` with each letter in a random case/width and random separators between."""
    out = []
    for i, letter in enumerate(term):
        if i:
            out.extend(draw(st.lists(st.sampled_from(SEPARATORS), max_size=3)))
        out.append(draw(st.sampled_from(LETTER_FORMS))(letter))
    return "".join(out)


@given(st.data(), terms, actions, st.text(max_size=20), st.text(max_size=20))
def test_property_disguised_term_is_found(
    data: st.DataObject, term: str, action: str, prefix: str, suffix: str
) -> None:
    hidden = data.draw(disguised(term))
    text = prefix + hidden + suffix
    verdict = WordFilter([Term(term, action)]).check(text)  # type: ignore[arg-type]
    assert verdict.action == action
    assert verdict.matched == (term,)
    if action == "mask":
        start = len(prefix)
        assert verdict.text[start : start + len(hidden)] == "*" * len(hidden)
    else:
        assert verdict.text == text


def reference_mask(text: str, terms: list[str]) -> str:
    """The expected mask, found naively with ``str.find`` instead of the automaton."""
    folded, origin = normalize(text)
    starred: set[int] = set()
    for term in terms:
        key = normalize(term)[0]
        at = folded.find(key)
        while at != -1:
            first, last = origin[at], origin[at + len(key) - 1]
            while last + 1 < len(text) and unicodedata.category(text[last + 1]) in {"Mn", "Me"}:
                last += 1
            starred.update(range(first, last + 1))
            at = folded.find(key, at + 1)
    return "".join("*" if i in starred else c for i, c in enumerate(text))


@st.composite
def texts_and_terms(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Mask terms, and a text of disguised terms, marks, multi-letter folds and noise."""
    mask_terms = draw(st.lists(st.text(alphabet="abs", min_size=1, max_size=3), min_size=1))
    piece = st.one_of(
        st.sampled_from(mask_terms).flatmap(disguised),
        st.sampled_from(list("ßﬆﬁ\u0301\u20dd")),
        st.text(max_size=3),
    )
    return "".join(draw(st.lists(piece, max_size=8))), mask_terms


@given(texts_and_terms())
def test_property_mask_preserves_length_and_only_stars_matches(
    case: tuple[str, list[str]],
) -> None:
    text, mask_terms = case
    verdict = WordFilter(Term(t, "mask") for t in mask_terms).check(text)
    assert len(verdict.text) == len(text)
    assert all(o == c or o == "*" for o, c in zip(verdict.text, text, strict=True))
    assert verdict.text == reference_mask(text, mask_terms)
    assert verdict.action == ("mask" if verdict.matched else "allow")
    assert (verdict.text != text) <= bool(verdict.matched)
