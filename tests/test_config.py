"""Profiles: good ones load, every malformed one gives one line naming file, line and key."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from podium.engine.config import Profile, load_profile, load_profile_text
from podium.engine.errors import ProfileError

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name = "tiny"
family = "cp"

[model]
d_model = 32
n_layers = 1
n_heads = 2
d_ff = 64
max_len = 64

[model.emb_sizes]
tempo = 8
chord = 8
bar_beat = 8
type = 4
pitch = 8
duration = 8
velocity = 8
emotion = 4
key = 4

[data]
source = "demo"
seq_len = 64

[train]
lr = 1e-3
epochs = 2
batch_size = 4

[train.early_stopping]
patience = 2

[checkpoint]
keep_last = 2

[generate]
top_p = 0.9

[loss_weights]
pitch = 2.0
"""


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(needle):
            return number
    raise AssertionError(f"{needle!r} not in profile")


def _replace(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (profile text, key named in the error, the line's first characters or None, message fragment)
MALFORMED = [
    (
        'name = "tiny"\nfamily = "cp"\n[train]\nlr = 1e-3\nepochs = [1, 2\n',
        None,
        "epochs = [1, 2",
        "TOML syntax error",
    ),
    (
        'name = "tiny"\nfamily = "cp"\n[train]\nlr = 1e-3\nlr = 2e-3\n',
        None,
        "lr = 2e-3",
        "TOML syntax error",
    ),
    (BASE + "\n[trian]\nlr = 1\n", "trian", "[trian]", "did you mean 'train'"),
    (_replace("lr = 1e-3", "lrr = 1e-3"), "train.lrr", "lrr", "did you mean 'lr'"),
    (_replace("lr = 1e-3", 'lr = "fast"'), "train.lr", "lr =", "expected a number, got 'fast'"),
    (
        _replace("epochs = 2", "epochs = 2.5"),
        "train.epochs",
        "epochs",
        "expected an integer, got 2.5",
    ),
    (
        _replace("batch_size = 4", "batch_size = true"),
        "train.batch_size",
        "batch_size",
        "expected an integer, got true",
    ),
    (_replace("lr = 1e-3", "lr = -0.001"), "train.lr", "lr =", "must be > 0"),
    (_replace("lr = 1e-3", "lr = 1e-3\nbeta1 = 1.5"), "train.beta1", "beta1", "must be in [0, 1)"),
    (
        _replace("lr = 1e-3", 'lr = 1e-3\nschedule = "cosin"'),
        "train.schedule",
        "schedule",
        "did you mean 'cosine'",
    ),
    (_replace('family = "cp"', 'family = "gpt7"'), "family", "family", "must be one of"),
    (_replace('family = "cp"', "family = 3"), "family", "family", "expected a string, got 3"),
    (
        _replace('family = "cp"', 'family = "tests.families.nope"'),
        "family",
        "family",
        "cannot import tests.families.nope",
    ),
    (_replace('family = "cp"', 'family = "tests.families"'), "family", "family", "has no FAMILY"),
    (BASE + "\n[probe]\nevery_epochs = 1\n", "probe", "[probe]", "unknown key"),
    (_replace("d_model = 32", "d_model = 31"), "model.d_model", "d_model", "divisible"),
    (_replace("key = 4\n", ""), "model.emb_sizes", "[model.emb_sizes]", "key"),
    (_replace('source = "demo"', 'source = "emopia"'), "data.path", "[data]", "path"),
    (_replace("pitch = 2.0", "pich = 2.0"), "loss_weights.pich", "pich", "did you mean 'pitch'"),
    (_replace("pitch = 2.0", "pitch = -1.0"), "loss_weights.pitch", "pitch = -1.0", ">= 0"),
    (
        _replace(
            "pitch = 2.0",
            "\n".join(
                f"{h} = 0.0"
                for h in (
                    "tempo",
                    "chord",
                    "bar_beat",
                    "type",
                    "pitch",
                    "duration",
                    "velocity",
                    "emotion",
                    "key",
                )
            ),
        ),
        "loss_weights",
        "[loss_weights]",
        "at least one head",
    ),
    (
        _replace("seq_len = 64", "seq_len = 128"),
        "data.seq_len",
        "seq_len",
        "longer than model.max_len",
    ),
    (
        "train = 5\n"
        + _replace("[train]\nlr = 1e-3\nepochs = 2\nbatch_size = 4\n", "").replace(
            "[train.early_stopping]\npatience = 2\n", ""
        ),
        "train",
        "train = 5",
        "expected a table",
    ),
    (_replace('name = "tiny"', 'name = "../evil"'), "name", "name", "not a safe name"),
    (_replace("top_p = 0.9", "top_p = 0.0"), "generate.top_p", "top_p", "(0, 1]"),
    (
        _replace("top_p = 0.9", 'top_p = 0.9\ncpu_weights = "fp8"'),
        "generate.cpu_weights",
        "cpu_weights",
        "auto, float32, bfloat16",
    ),
    (_replace("keep_last = 2", "keep_last = -1"), "checkpoint.keep_last", "keep_last", ">= 0"),
    (
        _replace("patience = 2", "patience = -2"),
        "train.early_stopping.patience",
        "patience",
        ">= 0",
    ),
    (_replace("lr = 1e-3", 'lr = 1e-3\ndevice = "tpu"'), "train.device", "device", "cuda"),
    (
        _replace("top_p = 0.9", "top_p = 0.9\ntemperatures = { pitchh = 1.0 }"),
        "generate.temperatures.pitchh",
        "temperatures",
        "did you mean 'pitch'",
    ),
    (_replace("d_model = 32", "d_model = 0"), "model.d_model", "d_model", ""),
]


@pytest.mark.parametrize(("text", "key", "line_start", "fragment"), MALFORMED)
def test_malformed_profile_gives_one_line_with_file_line_and_key(
    tmp_path, text, key, line_start, fragment
):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    line = _line_of(text, line_start)
    assert message.startswith(f"{path}:{line}: "), message
    if key is not None:
        assert f": {key}: " in message, message
    assert fragment in message, message


def test_at_least_fifteen_malformed_profiles_are_covered():
    assert len(MALFORMED) >= 15


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ProfileError, match=r"nope\.toml: profile not found$"):
        load_profile(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(tmp_path)


def test_base_profile_loads_with_defaults_and_weights():
    profile = load_profile_text(BASE, source="base.toml")
    assert isinstance(profile, Profile)
    assert profile.train.lr == 1e-3 and profile.train.epochs == 2
    assert profile.train.early_stopping.patience == 2
    assert profile.model.d_model == 32
    assert profile.loss_weights["pitch"] == 2.0 and profile.loss_weights["tempo"] == 1.0
    assert list(profile.loss_weights) == list(profile.family_spec.heads)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.train.lr = 1.0  # type: ignore[misc]


def test_the_family_is_required_and_names_its_tables_and_heads():
    text = _replace('family = "cp"\n', "")
    with pytest.raises(ProfileError) as info:
        load_profile_text(text, source="nofamily.toml")
    # one line (no line number: the key is nowhere), naming the built-in families
    assert (
        str(info.value)
        == "nofamily.toml: family: missing: say which model family, one of amt, chords, cp, emotion_pipeline, music_transformer"
    )


def test_a_family_outside_podium_is_named_by_its_module_path():
    profile = load_profile(ROOT / "tests" / "families" / "toy" / "toy.toml")
    assert profile.family == "tests.families.toy" and profile.family_spec.name == "toy"
    assert list(profile.loss_weights) == ["class", "aux"]
    assert profile.section("probe").every_epochs == 1  # the toy family's own table
    with pytest.raises(KeyError, match=r"has no \[generate\] table"):
        profile.section("generate")
    again = load_profile_text(profile.to_toml(), source="resolved.toml")
    assert again.to_dict() == profile.to_dict() and again.hash() == profile.hash()
    with pytest.raises(ProfileError, match=r"loss_weights\.pitch: unknown key"):
        load_profile(ROOT / "tests" / "families" / "toy" / "toy.toml", ["loss_weights.pitch=1"])
    with pytest.raises(ProfileError, match=r"probe\.every_epochs: must be >= 0"):
        load_profile(ROOT / "tests" / "families" / "toy" / "toy.toml", ["probe.every_epochs=-1"])


def test_resolved_profile_round_trips_through_toml():
    profile = load_profile_text(BASE, source="base.toml")
    again = load_profile_text(profile.to_toml(), source="resolved.toml")
    assert again.to_dict() == profile.to_dict()
    assert again.hash() == profile.hash()


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_profiles_load(path):
    profile = load_profile(path)
    assert profile.name == path.stem


def test_set_overrides_are_typed():
    profile = load_profile_text(
        BASE,
        source="base.toml",
        overrides=[
            "train.lr=3e-4",
            "train.schedule=noam",
            "train.epochs=7",
            "model.dropout=0",
            "loss_weights.pitch=0.5",
            "train.early_stopping.min_delta=0.01",
            "generate.temperatures={ pitch = 1.2 }",
            "checkpoint.save_best=false",
        ],
    )
    assert profile.train.lr == 3e-4
    assert profile.train.schedule == "noam"
    assert profile.train.epochs == 7
    assert profile.model.dropout == 0.0
    assert profile.loss_weights["pitch"] == 0.5
    assert profile.train.early_stopping.min_delta == 0.01
    assert profile.section("generate").temperatures == {"pitch": 1.2}
    assert profile.checkpoint.save_best is False


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        ("train.lr=abc", r"^--set train\.lr=abc: train\.lr: expected a number, got 'abc'$"),
        ("train.lrr=1", r"^--set train\.lrr=1: train\.lrr: unknown key; did you mean 'lr'\?$"),
        ("train.epochs=1.5", r"expected an integer"),
        ("train.lr", r"expected KEY=VALUE"),
        ("trian.lr=1", r"did you mean 'train'"),
        ("train.lr.x=1", r"train\.lr\.x: is not a table"),
        ("loss_weights.pich=1", r"did you mean 'pitch'"),
        ("checkpoint.save_best=maybe", r"expected true or false"),
    ],
)
def test_bad_overrides(item, pattern):
    with pytest.raises(ProfileError, match=pattern):
        load_profile_text(BASE, source="base.toml", overrides=[item])


def test_override_value_checked_against_the_rules_names_the_flag():
    with pytest.raises(ProfileError) as info:
        load_profile_text(BASE, source="base.toml", overrides=["train.lr=-1"])
    assert str(info.value) == "base.toml: --set train.lr=-1: train.lr: must be > 0 (got -1.0)"


def test_cli_bad_profile_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(_replace("lr = 1e-3", "lrr = 1e-3"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "podium.tui.cli",
            "train",
            str(path),
            "--headless",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(
        rf"^podium: error: {re.escape(str(path))}:\d+: train\.lrr: unknown key; did you mean 'lr'\?$",
        lines[0],
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was created for a profile that failed


def test_relative_data_path_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = _replace('source = "demo"', 'source = "midi_dir"\npath = "data/pieces"')
    profile = load_profile_text(text, source="p.toml")
    assert profile.data.path == str(tmp_path / "data" / "pieces")
    assert load_profile_text(profile.to_toml(), source="r.toml").data.path == profile.data.path


def test_an_empty_profile_or_one_without_a_name_is_refused(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ProfileError, match=r"empty\.toml: family: missing"):
        load_profile(empty)  # not the full default model, trained by accident
    nameless = tmp_path / "nameless.toml"
    nameless.write_text('family = "cp"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(nameless)
    assert str(info.value).startswith(f"{nameless}: name: missing")


def test_nesting_and_integers_beyond_toml_are_one_line():
    deep = 'name = "d"\nfamily = "cp"\nx = ' + "[" * 3000 + "]" * 3000 + "\n"
    with pytest.raises(ProfileError, match=r"^deep\.toml: TOML nested too deeply to read$"):
        load_profile_text(deep, source="deep.toml")
    big = _replace("lr = 1e-3", "lr = 1e-3\nseed = 1180591620717411303424")
    with pytest.raises(ProfileError, match=r"base\.toml:\d+: train\.seed: out of range"):
        load_profile_text(big, source="base.toml")
    with pytest.raises(ProfileError, match=r"--set train\.seed=.*: train\.seed: out of range"):
        load_profile_text(BASE, source="base.toml", overrides=[f"train.seed={2**63}"])
    with pytest.raises(ProfileError, match="expected an inline table"):
        load_profile_text(BASE, source="base.toml", overrides=["loss_weights=" + "[" * 3000])


def _load_in_a_child(path: Path) -> subprocess.CompletedProcess:
    """``load_profile(path)`` in a child held to 2 GB of memory and 20 s: what was a hang or an
    out-of-memory machine fails this test instead of the box."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    code = (
        "import sys\nfrom podium.engine.config import load_profile\n"
        "from podium.engine.errors import ProfileError\n"
        "try:\n    load_profile(sys.argv[1])\n"
        "except ProfileError as e:\n    print(e)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=20,
        preexec_fn=limit,
    )


def test_profiles_are_read_only_from_regular_files_of_bounded_size(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text('name = "big"\nfamily = "cp"\n' + "# padding\n" * 300_000)  # ~3 MB
    for path, fragment in (
        (Path("/dev/zero"), "not a regular file"),
        (fifo, "not a regular file"),
        (big, "too big for a profile"),
    ):
        proc = _load_in_a_child(path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert proc.stdout.startswith(f"{path}: ") and fragment in proc.stdout, proc.stdout
