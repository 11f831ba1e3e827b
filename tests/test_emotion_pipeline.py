"""The emotion-to-music pipeline (MidiKompanion): the thesaurus, its synthetic and real data,
and, on one tiny run trained once for the module, its metrics, the ONNX export with its checks,
and the phrase `podium generate --node` writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

from podium.engine.cli.main import main as cli_main
from podium.engine.families.emotion_pipeline import FAMILY, METRICS, make_thesaurus
from podium.engine.families.emotion_pipeline import data as D
from podium.engine.families.emotion_pipeline import export as X
from podium.engine.families.emotion_pipeline import thesaurus as th
from podium.engine.families.emotion_pipeline.config import PipelineDataConfig, PipelineModelConfig
from podium.engine.families.emotion_pipeline.metrics import PipelineMetrics
from podium.engine.families.emotion_pipeline.model import HEADS, SPECS, EmotionPipeline
from podium.engine.families.emotion_pipeline.phrase import (
    melody_pitches,
    network_outputs,
    onset_steps,
)
from podium.engine.families.registry import SampleRequest
from podium.engine.generate import load_model

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "midikompanion.toml"
TINY = [
    "data.examples=400",
    "train.epochs=2",
    "train.batch_size=32",
    "train.warmup_steps=2",
    *(f"model.{s.head}.width=16" for s in SPECS),
]
DENSE, SPARSE = "joy.elation.overwhelming", "sadness.grief.faint"


# -- the thesaurus ----------------------------------------------------------------------------


def test_thesaurus_has_216_nodes_by_base_sub_nuance_and_is_the_generators_output():
    thesaurus = th.load()
    assert len(thesaurus) == 216
    assert {n.base for n in thesaurus.nodes} == set(th.BASES)
    assert all(len(subs) == 6 for subs in thesaurus.subs.values())
    node = thesaurus.get("fear.panic.strong")
    assert node.nuance == "strong" and node.mode in th.MODES and node.related
    assert all(other in thesaurus for n in thesaurus.nodes for other in n.related)
    # The shipped file is exactly what the dev script writes (deterministic, up to date).
    shipped = json.loads((Path(th.__file__).with_name("thesaurus.json")).read_text())
    assert shipped["nodes"] == make_thesaurus.nodes()
    # Attributes follow affect: brighter modes and sparser bars for calm, pleasant nodes.
    calm, busy = thesaurus.get(SPARSE), thesaurus.get(DENSE)
    assert calm.note_density < busy.note_density and calm.tempo < busy.tempo
    assert busy.mode in ("major", "lydian") and calm.mode in ("minor", "phrygian", "dorian")


@pytest.mark.parametrize(
    ("index", "field", "value", "says"),
    [
        (7, "arousal", 1.5, "node 7 (joy.contentment.mild): field arousal: must be in [0, 1]"),
        (0, "mode", "locrian", "node 0 (joy.elation.faint): field mode: must be one of"),
        (40, "related", ["joy.nothing.faint"], "node 40 (sadness.grief.strong): field related"),
        (
            215,
            "tempo_range",
            [140, 120],
            "node 215 (disgust.boredom.overwhelming): field tempo_range",
        ),
        (3, "note_density", None, "node 3 (joy.elation.marked): field note_density: missing"),
    ],
)
def test_a_broken_thesaurus_names_the_node_and_the_field(tmp_path, index, field, value, says):
    doc = {"nodes": make_thesaurus.nodes()}
    if value is None:
        del doc["nodes"][index][field]
    else:
        doc["nodes"][index][field] = value
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(th.ThesaurusError) as err:
        th.load_file(path)
    assert says in str(err.value) and str(path) in str(err.value)


# -- data -------------------------------------------------------------------------------------


def _build(**over) -> D.PipelineData:
    return D.build_data(PipelineDataConfig(**{"examples": 200, **over}), lambda line: None)


def test_data_is_deterministic_by_seed_split_80_10_10_and_augmented_only_in_training():
    a, b, c = _build(), _build(), _build(seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (160, 20, 20)
    for name in D.PipelineExamples.FIELDS:
        assert torch.equal(a.train.tensors[name], b.train.tensors[name])
    assert not torch.equal(a.train.tensors["features"], c.train.tensors["features"])
    mixed = (a.train.tensors["cond"] != a.train.tensors["emotion"]).any(dim=1).float().mean()
    assert 0.3 < float(mixed) < 0.7  # augment = 0.5 of the training rows
    assert torch.equal(a.val.tensors["cond"], a.val.tensors["emotion"])
    assert not (_build(augment=0.0).train.tensors["cond"] != a.train.tensors["emotion"]).any()


def test_a_bar_follows_its_node(tmp_path):
    thesaurus = th.load()
    gen = np.random.Generator(np.random.PCG64(0))
    for node in (thesaurus.get(DENSE), thesaurus.get(SPARSE)):
        bar = D.synth_bar(node, gen, noise=0.0)
        assert all(p % 12 in node.scale for p in np.flatnonzero(bar.melody))
        assert int((bar.groove[:16] > 0).sum()) == D.onsets_per_bar(node)
        assert all(p % 12 in node.scale for p in D.chord_pitches(bar.chord))


def test_real_examples_report_bad_rows_by_index_and_reason_and_keep_the_good(tmp_path):
    midi = pretty_midi.PrettyMIDI(initial_tempo=100)
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [pretty_midi.Note(80, 60 + i % 5, i * 0.3, i * 0.3 + 0.25) for i in range(12)]
    midi.instruments.append(piano)
    midi.write(str(tmp_path / "a.mid"))
    (tmp_path / "f.json").write_text(json.dumps([0.5] * 128))
    (tmp_path / "short.json").write_text(json.dumps([0.5] * 12))
    affect = {"valence": 0.5, "arousal": 0.4, "dominance": 0.1, "intensity": 0.6}
    rows = [
        {"midi": "a.mid", "node_id": "joy.hope.mild", **affect},
        {"features": "f.json", "node_id": "fear.dread.strong", **affect},
        {"midi": "a.mid", "node_id": "joy.nope.mild", **affect},
        {"midi": "missing.mid", "node_id": "joy.hope.mild", **affect},
        {"features": "short.json", "node_id": "joy.hope.mild", **affect},
        {"midi": "a.mid", "node_id": "joy.hope.mild", **{**affect, "arousal": 3}},
        "not a row",
    ]
    (tmp_path / "real.json").write_text(json.dumps(rows))
    lines: list[str] = []
    data = D.build_data(
        PipelineDataConfig(examples=40, real_examples=str(tmp_path / "real.json")), lines.append
    )
    bad = [line for line in lines if "skipped" in line]
    assert [line.split(": ")[1] for line in bad] == [f"row {i}" for i in (2, 3, 4, 5, 6)]
    assert "'joy.nope.mild' is not a thesaurus node" in bad[0]
    assert "no file" in bad[1] and "128 finite numbers" in bad[2]
    assert "arousal: must be in [0, 1]" in bad[3] and "expected an object" in bad[4]
    assert data.model_info["real_examples"] == 2
    parts = (data.train, data.val, data.test)
    assert sum(int((p.tensors["music"] == 0).sum()) for p in parts) == 2
    # a real row trains the recognizer only: its music heads are masked out of the losses
    batch = {k: v[:4] for k, v in data.train.tensors.items()}
    batch["music"] = torch.zeros(4)
    with torch.no_grad():
        losses = EmotionPipeline(PipelineModelConfig()).eval()(batch).losses
    assert float(losses["emotion"]) > 0 and float(losses["melody"]) == 0.0


# -- one tiny run: metrics, export, generation -------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    runs = tmp_path_factory.mktemp("emo") / "runs"
    sets = [a for item in TINY for a in ("--set", item)]
    code = cli_main(
        ["train", str(PROFILE), "--headless", "--name", "t", "--runs-dir", str(runs), *sets]
    )
    assert code == 0
    return runs, runs / "t"


def test_each_network_has_a_loss_head_and_a_validation_metric(run, capsys):
    runs, _ = run
    capsys.readouterr()
    assert cli_main(["metrics", "t", "--json", "--runs-dir", str(runs)]) == 0
    series = json.loads(capsys.readouterr().out)["series"]
    for spec in SPECS:
        assert series[f"train/loss/{spec.head}"] and series[f"val/loss/{spec.head}"]
    for name in METRICS:
        value = series[f"val/{name}"][-1][1]
        assert np.isfinite(value) and value >= 0
    assert FAMILY.heads == HEADS and tuple(PipelineMetrics().parts) == METRICS
    assert FAMILY.direction("val/dynamics_mae") == "min"
    assert FAMILY.direction("val/melody_f1") == "max"


def test_export_writes_five_onnx_files_that_pass_every_check(run, tmp_path, capsys):
    runs, _ = run
    out = tmp_path / "onnx"
    assert cli_main(["export", "t", "--runs-dir", str(runs), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "export_report.json").read_text())
    assert report["ok"] and report["checks"] == list(X.CHECKS)
    assert [f["name"] for f in report["files"]] == [s.title for s in SPECS]
    for spec, row in zip(SPECS, report["files"], strict=True):
        assert Path(row["path"]).stat().st_size < X.MAX_BYTES
        assert row["max_abs_diff"] <= 1e-4 and row["median_ms"] < 10 and not row["failed"]
        assert row["input"] == f"{spec.input_name}[batch,{spec.inputs}]"
        assert spec.title in printed
    assert "median_ms" in printed.splitlines()[0]


def test_export_fails_naming_the_network_and_the_check(run, tmp_path, capsys, monkeypatch):
    runs, run_dir = run
    # A file checked against other weights than it holds: outputs differ (a real mismatch).
    model, _ = load_model(run_dir, "latest")
    net = model.net("groove")
    X.export_network(net, tmp_path / "g.onnx")
    with torch.no_grad():
        net.body[0].weight.add_(1.0)
    import onnxruntime

    checked = X.check_network(net, tmp_path / "g.onnx", onnxruntime, seed=0)
    assert "max_diff" in checked.failed and set(checked.failed) == {"max_diff"}
    # The command: a size limit below every file's size fails each, exit 1 with the names.
    monkeypatch.setattr(X, "MAX_BYTES", 1000)
    capsys.readouterr()
    assert cli_main(["export", "t", "--runs-dir", str(runs), "--onnx", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "EmotionRecognizer failed size" in err and "GroovePredictor failed size" in err
    assert not json.loads((tmp_path / "o" / "export_report.json").read_text())["ok"]


def test_export_without_onnxruntime_says_how_to_install_it(run, tmp_path, capsys, monkeypatch):
    runs, _ = run
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    assert cli_main(["export", "t", "--runs-dir", str(runs), "--onnx", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'podium[onnx]'" in err


def _bars(midi: pretty_midi.PrettyMIDI, tempo: float, bars: int) -> list[int]:
    bar = 4 * 60 / tempo
    return [sum(1 for n in midi.instruments[0].notes if b * bar <= n.start + 1e-3 < (b + 1) * bar) for b in range(bars)]  # fmt: skip


def test_generate_writes_a_phrase_whose_mode_and_density_follow_the_node(run, tmp_path):
    runs, run_dir = run
    model, _ = load_model(run_dir, "latest")
    for node_id in (DENSE, SPARSE):
        node = th.node(node_id)
        path = tmp_path / f"{node_id}.mid"
        args = ["generate", "t", "--node", node_id, "--bars", "3", "-o", str(path)]
        assert cli_main([*args, "--runs-dir", str(runs)]) == 0
        midi = pretty_midi.PrettyMIDI(str(path))
        melody, chords = midi.instruments
        assert {n.pitch % 12 for n in melody.notes + chords.notes} <= set(node.scale)
        assert midi.get_tempo_changes()[1][0] == pytest.approx(round(node.tempo))
        assert _bars(midi, round(node.tempo), 3) == [D.onsets_per_bar(node)] * 3
        # The networks fill the frame: pitches are the melody net's likeliest in-scale notes,
        # onsets the groove net's highest-scoring steps.
        out = network_outputs(model, node, torch.device("cpu"))
        assert {n.pitch for n in melody.notes} <= set(
            melody_pitches(node, out["melody"])[0].tolist()
        )
        bar = 4 * 60 / round(node.tempo)
        steps = {round((n.start % bar) / bar * 16) % 16 for n in melody.notes}
        assert steps <= set(onset_steps(node, out["groove"]))
    dense = pretty_midi.PrettyMIDI(str(tmp_path / f"{DENSE}.mid")).instruments[0].notes
    sparse = pretty_midi.PrettyMIDI(str(tmp_path / f"{SPARSE}.mid")).instruments[0].notes
    assert len(dense) > 2 * len(sparse)


def test_generate_is_deterministic_by_seed_and_refuses_an_unknown_node(run, capsys):
    runs, run_dir = run
    model, profile = load_model(run_dir, "latest")
    sampler = FAMILY.sampler
    assert sampler is not None
    a, b, c = (
        sampler.sample(model, profile, [SampleRequest(conditioning={"node": ""}, seed=s)], torch.device("cpu"))[0]
        for s in (5, 5, 6)
    )  # fmt: skip
    assert np.array_equal(a.tokens, b.tokens) and a.conditioning["node"] in th.load()
    assert not np.array_equal(a.tokens, c.tokens)
    capsys.readouterr()
    assert cli_main(["generate", "t", "--node", "joy.elation.stong", "--runs-dir", str(runs)]) == 2
    assert "did you mean joy.elation.strong" in capsys.readouterr().err
