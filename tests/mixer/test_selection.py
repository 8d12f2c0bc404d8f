"""Choosing talkers from RFC 6464 levels, with hysteresis."""

from __future__ import annotations

from mcu.mixer.selection import TalkerSelector


def run(selector: TalkerSelector, levels: dict[str, int], ticks: int) -> list[str]:
    selected: list[str] = []
    for _ in range(ticks):
        for source, level in levels.items():
            selector.observe(source, level)
        selected = selector.update()
    return selected


def make(*sources: str) -> TalkerSelector:
    selector = TalkerSelector(max_talkers=3)
    for s in sources:
        selector.add(s)
    return selector


def test_the_three_loudest_are_selected_and_silence_is_not() -> None:
    selector = make("a", "b", "c", "d", "e")
    selected = run(selector, {"a": 30, "b": 20, "c": 127, "d": 40, "e": 35}, 10)
    assert selected == ["b", "a", "e"]


def test_nobody_is_selected_in_a_silent_room() -> None:
    selector = make("a", "b")
    assert run(selector, {"a": 127, "b": 90}, 20) == []


def test_a_talker_is_held_through_a_pause_between_words() -> None:
    selector = make("a", "b")
    run(selector, {"a": 25, "b": 127}, 20)
    assert run(selector, {"a": 127, "b": 127}, 10) == ["a"]  # 200 ms pause
    assert run(selector, {"a": 127, "b": 127}, 40) == []  # gone quiet for good


def test_a_newcomer_displaces_only_when_clearly_louder() -> None:
    selector = make("a", "b", "c", "d")
    run(selector, {"a": 30, "b": 30, "c": 30}, 20)
    # Slightly louder (3 dB): not worth a switch.
    assert "d" not in run(selector, {"a": 30, "b": 30, "c": 31, "d": 27}, 20)
    # Much louder (15 dB): switches in.
    assert "d" in run(selector, {"a": 30, "b": 30, "c": 31, "d": 15}, 5)


def test_onset_selects_within_a_tick() -> None:
    selector = make("a")
    run(selector, {"a": 127}, 5)
    assert run(selector, {"a": 20}, 1) == ["a"]
