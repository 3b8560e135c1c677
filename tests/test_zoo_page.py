"""The README's leaderboard is generated from the registry; the zoo page renders in a real browser."""
from __future__ import annotations

import re

import pytest

from conftest import REPO
from sezoo.zoo import list_models
from sezoo.zoo.page import build_page, find_browser, leaderboard_markdown, readme_leaderboard, render, update_readme


def test_readme_leaderboard_is_the_registry_s():
    """Never typed: regenerate with `sezoo zoo leaderboard --readme README.md --figure docs/zoo_pareto.png`."""
    assert readme_leaderboard(REPO / "README.md") == leaderboard_markdown(list_models())
    assert (REPO / "docs" / "zoo_pareto.png").stat().st_size > 50_000


def test_leaderboard_ranks_each_split_by_quality_and_lists_every_model_once():
    entries = {e.name: e for e in list_models()}
    text = leaderboard_markdown(entries.values())
    splits = re.split(r"^Scored on the `([^`]+)` test split", text, flags=re.M)[1:]
    seen = []
    for data, block in zip(splits[::2], splits[1::2]):
        names = re.findall(r"^\| \d+ \| `([^`]+)` \|", block, flags=re.M)
        assert names and all(entries[n].training.data == data for n in names)
        pesq = [entries[n].metrics["pesq_wb"] for n in names]
        assert pesq == sorted(pesq, reverse=True)
        seen += names
    assert sorted(seen) == sorted(entries)


def test_readme_without_the_block_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# a readme\n")
    with pytest.raises(ValueError, match="no leaderboard block"):
        update_readme(readme, list_models())


@pytest.mark.skipif(find_browser() is None, reason="no Chromium (make test installs Debian's chromium when root)")
def test_zoo_page_renders_in_headless_chromium_with_a_player_per_model(tiny_corpus, tmp_path):
    entries = list_models()
    test = tiny_corpus / "mini" / "test"
    index = build_page(tmp_path / "page", test / "noisy", test / "clean", examples=2, progress=lambda _: None)
    seen = render(index)
    slugs = [re.sub(r"[^A-Za-z0-9_.-]+", "-", e.name) for e in entries]
    assert seen["sections"] == slugs
    assert seen["images"] == [("pareto.png", "loaded")]
    assert seen["tables"] >= len({e.training.data for e in entries}) + 2 * len(entries)  # leaderboard, card, examples
    assert len(seen["audio"]) == 3 * 2 * len(entries) and all(state == "loaded" for _, state in seen["audio"])
    for slug in slugs:  # every model has its own enhanced examples, each loaded by the browser
        assert sum(src.startswith(f"audio/{slug}/") for src, _ in seen["audio"]) == 2
    assert seen["status"] == f"{len(seen['audio'])} of {len(seen['audio'])} audio files loaded"

    missing = next(src for src, _ in seen["audio"] if src.startswith(f"audio/{slugs[0]}/"))
    (index.parent / missing).unlink()  # the check sees a broken player
    states = dict(render(index)["audio"])
    assert states[missing] == "error" and list(states.values()).count("error") == 1
