"""The command line: one declaration per subcommand (the stage signature), help text, exception policy."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from latentbench import cli
from latentbench.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: latentbench {name}" in text
    fn = cli.resolve(name)
    assert fn.__doc__ and " ".join(fn.__doc__.split()[:3]) in " ".join(text.split())


def test_top_level_help_lists_every_subcommand_with_its_summary(capsys):
    with pytest.raises(SystemExit):
        cli.main(["-h"])
    text = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\s*(\S|$)", text, re.M), name
    assert "Train one backbone" in text


def _toy(settings: dict, paths: list[str], out: str | Path, scale: float, shard: int, names: tuple[str, ...] = (),
         flag: bool = False, extra: dict | None = None, batch_size: int = 250) -> None:
    """Toy stage."""
    _toy.seen = dict(settings=settings, paths=paths, out=out, scale=scale, shard=shard, names=names, flag=flag,
                     extra=extra, batch_size=batch_size)


def test_parser_follows_the_signature(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "toy", f"{__name__}:_toy")
    argv = ["toy", "--settings", '{"a": 1}', "--paths", "x", "y", "--out", "o", "--scale", "1.5", "--shard", "3",
            "--flag", "--batch-size", "7"]
    assert cli.main(argv) == 0
    assert _toy.seen == dict(settings={"a": 1}, paths=["x", "y"], out="o", scale=1.5, shard=3, names=[], flag=True,
                             extra=None, batch_size=7)
    with pytest.raises(SystemExit):  # a required flag left out is a usage error
        cli.main(argv[:-6])
    with pytest.raises(SystemExit):  # JSON is checked by the parser
        cli.main(["toy", "--settings", "{bad", *argv[3:]])


def _user_error(path: str) -> None:
    """Raises a config error."""
    raise ConfigError(f"config error at tokenizers.lcr.variant: unknown variant {path!r}")


def _bug(path: str) -> None:
    """Raises a programming error."""
    raise ValueError("operands could not be broadcast together")


def test_user_error_is_one_line_and_bug_keeps_traceback(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "user-error", f"{__name__}:_user_error")
    monkeypatch.setitem(cli.COMMANDS, "bug", f"{__name__}:_bug")
    monkeypatch.delenv("LATENTBENCH_DEBUG", raising=False)
    assert cli.main(["user-error", "--path", "w0.5"]) == 1
    err = capsys.readouterr().err
    assert err == "latentbench user-error: error: config error at tokenizers.lcr.variant: unknown variant 'w0.5'\n"
    with pytest.raises(ValueError, match="broadcast"):  # a bug is not turned into a one-liner
        cli.main(["bug", "--path", "x"])
    monkeypatch.setenv("LATENTBENCH_DEBUG", "1")
    with pytest.raises(ConfigError):
        cli.main(["user-error", "--path", "w0.5"])


def test_validate_config_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\nbogus: 1\n")
    assert cli.main(["validate-config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("latentbench validate-config: error: config error at")


def _rule_calls() -> list[tuple[str, list[str]]]:
    """(subcommand, flags) of every `latentbench <subcommand>` in the rules' shell strings."""
    calls = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.findall(r"shell:\s*\n((?:\s+\".*\"\s*\n)+)", text):
            shell = "".join(re.findall(r"\"(.*)\"", block))
            match = re.search(r"(?:latentbench|\{params\.launcher\})\s+([a-z0-9-]+)(.*?)>", shell)
            if match:
                calls.append((match.group(1), re.findall(r"(--[a-z0-9-]+)", match.group(2))))
    return calls


def test_rules_call_existing_flags():
    calls = _rule_calls()
    assert len(calls) >= 18
    for name, flags in calls:
        parser = cli.build_parser(name)
        sub = next(a for a in parser._actions if a.dest == "command").choices[name]
        known = {o for a in sub._actions for o in a.option_strings}
        required = {a.option_strings[0] for a in sub._actions if a.required and a.option_strings}
        assert set(flags) <= known, (name, set(flags) - known)
        assert required <= set(flags), (name, required - set(flags))


def test_startup_is_logged(monkeypatch, caplog):
    monkeypatch.setitem(cli.COMMANDS, "toy", f"{__name__}:_toy")
    with caplog.at_level("INFO", logger="latentbench.cli"):
        cli.main(["toy", "--settings", "{}", "--paths", "x", "--out", "o", "--scale", "1", "--shard", "0"])
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("startup ")]
    assert re.fullmatch(r"startup \d+\.\d\d s \(process start to the toy call: .*\)", line)


# Heavy packages no job imports at startup (each costs a job about a second: torchvision pulls in
# torch._dynamo; sklearn and scipy.stats only the jobs that fit a GMM or a t-SNE need, inside them).
HEAVY_AT_STARTUP = ("torchvision", "sklearn", "scipy.stats", "timm", "transformers", "matplotlib")


def test_job_startup_imports_no_heavy_package():
    import subprocess
    import sys

    code = (
        "import sys; from latentbench.cli import COMMANDS, resolve\n"
        f"heavy = {HEAVY_AT_STARTUP!r}\n"
        "for name in COMMANDS:\n"
        "    before = set(sys.modules); resolve(name)\n"
        "    if name not in ('collect', 'correlate', 'report'):\n"  # torch-free; they need scipy.stats, matplotlib
        "        print(name, sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()}
    assert loaded and all(v == "[]" for v in loaded.values()), {k: v for k, v in loaded.items() if v != "[]"}


def test_torch_free_jobs_do_not_import_torch():
    import subprocess
    import sys

    # a torch-free stage (genericpath.exists) run through main(): threads are set only for torch
    code = ("import sys; from latentbench import cli\n"
            "cli.COMMANDS['toy'] = 'genericpath:exists'\n"
            "assert cli.main(['toy', '--path', '.']) == 0\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
