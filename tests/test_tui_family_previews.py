"""Dashboard previews for every family with a sampler, not only CP: a tiny run of each family's
profile, then ``g`` on its run screen, a conditioning value typed into the family's own field,
and the preview screen showing the MIDI it wrote."""

from __future__ import annotations

from pathlib import Path

import pretty_midi
import pytest

from podium.engine.cli.main import main as cli_main
from podium.tui.app import PodiumApp
from podium.tui.screens.preview import GenerateModal, PreviewScreen
from podium.tui.screens.run import RunScreen
from tests.test_emotion_pipeline import TINY as EMO_TINY
from tests.test_mt_train import TINY as MT_TINY
from tests.tui_helpers import sync, wait_for

ROOT = Path(__file__).resolve().parents[1]
AMT_TINY = [
    "train.epochs=1", "data.n_pieces=12", "data.bars=2", "data.seq_len=48", "model.max_len=64",
    "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "data.max_semantic=3",
    "train.batch_size=4", "train.warmup_steps=1",
]  # fmt: skip
CASES = {
    # profile, overrides, (conditioning field, value), what the sample's file name holds
    "music_transformer": ("music-transformer-small.toml", MT_TINY, ("sentiment", "negative")),
    "amt": ("amt-gpt2-small.toml", AMT_TINY, ("semantic", "1")),
    "emotion_pipeline": ("midikompanion.toml", EMO_TINY, ("node", "joy.elation.overwhelming")),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("previews-cache")


@pytest.mark.parametrize("family", sorted(CASES))
@sync
async def test_g_previews_a_sample_of_each_familys_run(family, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("PODIUM_CACHE", str(cache))
    profile, tiny, (option, value) = CASES[family]
    runs = tmp_path / "runs"
    sets = [a for item in tiny for a in ("--set", item)]
    args = ["train", str(ROOT / "profiles" / profile), "--headless", "--name", family]
    assert cli_main([*args, "--runs-dir", str(runs), "--max-steps", "3", *sets]) == 0

    app = PodiumApp(root=runs, profile_dirs=[])
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#runs")
        await wait_for(pilot, lambda: table.row_count == 1, 15, "the runs table")
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, GenerateModal), 10, "the form")
        form = app.screen
        form.query_one(f"#f-{option}").value = value  # the family's own field
        form.query_one("#f-bars").value = "2"
        form.query_one("#f-seed").value = "5"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen), 90, "the preview")
        preview = app.screen
        await wait_for(pilot, lambda: preview.current is not None, 30, "the sample")
        path = preview.current
        assert path.parent == runs / family / "samples" and path.name.startswith("latest-")
        assert "seed5" in path.name
        pretty_midi.PrettyMIDI(str(path))  # a MIDI file, read back
        stats = str(preview.query_one("#preview-stats").render())
        assert "from checkpoint latest (step 3) · seed 5 · " in stats, stats
        assert f"{option} " in stats and "notes" in stats, stats
