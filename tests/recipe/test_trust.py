"""Issue 20: what a recipe touches is shown before it runs, and code or keys that leave the
recipe's own ground need an explicit opt-in, refused with a line that says what to add."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from helpers import cli_env

ROOT = Path(__file__).resolve().parents[2]
GEN = "def make(ctx):\n    yield {'v': ctx.slot}\n"


def datamill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datamill", *args], capture_output=True, text=True,
        env=cli_env() | (env or {}), timeout=120,
    )  # fmt: skip


def _errors(res: subprocess.CompletedProcess) -> list[str]:
    return [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("[datamill]")]


def test_plan_and_check_list_code_files_hosts_and_env(tmp_path: Path) -> None:
    (tmp_path / "gen.py").write_text(GEN)
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: t\nseed: 1\nsize: 4\nparams: {table: table.csv}\n"
        "model: {backend: openai, base_url: 'https://api.openai.com/v1', model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}\n"
        "columns:\n  g: {generator: './gen.py:make'}\n  a: {llm: {prompt: 'Say {{ g }}'}}\n"
    )
    for argv in (["plan", str(recipe)], ["run", str(recipe), "--out", str(tmp_path / "out"), "--check"]):
        res = datamill(*argv, env={"OPENAI_API_KEY": "sk-x"})
        assert res.returncode == 0, res.stderr
        assert f"./gen.py:make -> {tmp_path / 'gen.py'} [recipe folder]" in res.stdout
        assert f"{tmp_path / 'table.csv'} (params.table)" in res.stdout
        assert "api.openai.com (https://api.openai.com/v1) [provider] with $OPENAI_API_KEY" in res.stdout
        assert "OPENAI_API_KEY (api key)" in res.stdout
    assert not (tmp_path / "out").exists(), "--check writes nothing"


def test_the_manifest_records_what_the_run_touched(tmp_path: Path) -> None:
    (tmp_path / "gen.py").write_text(GEN)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nseed: 1\nsize: 4\ncolumns:\n  g: {generator: './gen.py:make'}\n")
    out = tmp_path / "out"
    assert datamill("run", str(recipe), "--out", str(out)).returncode == 0
    touched = orjson.loads((out / "manifest.json").read_bytes())["touches"]
    assert [c["path"] for c in touched["code"]] == [str(tmp_path / "gen.py")]


@pytest.mark.parametrize("host", ["10.1.2.3", "models.example.com"])
def test_a_key_for_a_host_nobody_vouched_for_is_refused_before_any_request(tmp_path: Path, host: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: t\nseed: 1\nsize: 2\nmodel: {{backend: openai, base_url: 'http://{host}:8000/v1', model: m,\n"
        "  api_key_env: AWS_SECRET_ACCESS_KEY}\ncolumns:\n  a: {llm: {prompt: 'hi'}}\n"
    )
    out = tmp_path / "out"
    env = {"AWS_SECRET_ACCESS_KEY": "secret-value-123"}
    res = datamill("run", str(recipe), "--out", str(out), env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    [line] = _errors(res)
    assert line.startswith(f"{recipe}:4:") and "model.base_url" in line, line
    assert f"--trust-host {host}" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert "secret-value-123" not in res.stdout + res.stderr
    assert not out.exists()
    # The opt-in: a flag, or the config file's trust.hosts.
    assert datamill("run", str(recipe), "--out", str(out), "--check", "--trust-host", host, env=env).returncode == 0
    config = tmp_path / "config.yaml"
    config.write_text(f"trust:\n  hosts: [{host}]\n")
    assert (
        datamill(
            "run", str(recipe), "--out", str(out), "--check", env=env | {"DATAMILL_CONFIG": str(config)}
        ).returncode
        == 0
    )


def test_loopback_needs_no_opt_in(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: t\nseed: 1\nsize: 2\nmodel: {backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m,\n"
        "  api_key_env: K}\ncolumns:\n  a: {llm: {prompt: 'hi'}}\n"
    )
    res = datamill("run", str(recipe), "--out", str(tmp_path / "o"), "--check", env={"K": "k"})
    assert res.returncode == 0, res.stderr


def test_code_outside_the_recipe_folder_needs_an_opt_in(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "gen.py").write_text(GEN + "open(__file__ + '.ran', 'w').close()\n")
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("name: t\nseed: 1\nsize: 3\ncolumns:\n  g: {generator: '../elsewhere/gen.py:make'}\n")
    out = tmp_path / "out"
    res = datamill("run", str(recipe), "--out", str(out))
    assert res.returncode == 2, res.stdout + res.stderr
    [line] = _errors(res)
    assert "columns.g.generator" in line and "--trust-code" in line and "trust.code" in line, line
    assert not out.exists()
    assert not (tmp_path / "elsewhere" / "gen.py.ran").exists(), "the module was not imported"
    assert datamill("run", str(recipe), "--out", str(out), "--trust-code").returncode == 0
    config = tmp_path / "config.yaml"
    config.write_text(f"trust:\n  code: [{tmp_path / 'elsewhere'}]\n")
    res = datamill("run", str(recipe), "--out", str(tmp_path / "out2"), env={"DATAMILL_CONFIG": str(config)})
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_every_example_and_builtin_passes_without_flags(example: str, tmp_path: Path) -> None:
    res = datamill("run", str(ROOT / "examples" / example), "--out", str(tmp_path / "o"), "--check",
                   env={"DATAMILL_API_KEY": "k", "OPENAI_API_KEY": "k"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    for name in ("lambda-traces", "contextual"):
        assert datamill("run", name, "--out", str(tmp_path / name), "--check").returncode == 0


def test_a_module_found_through_the_current_directory_is_refused_before_it_runs(tmp_path: Path) -> None:
    pkg = tmp_path / "work" / "pkgx"
    pkg.mkdir(parents=True)
    marker = tmp_path / "imported"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "gen.py").write_text(GEN)
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("name: t\nseed: 1\nsize: 3\ncolumns:\n  g: {generator: 'pkgx.gen:make'}\n")
    res = subprocess.run([sys.executable, "-m", "datamill", "run", str(recipe), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=cli_env(), cwd=tmp_path / "work", timeout=120)  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--trust-code" in res.stderr
    assert not marker.exists(), "the package's __init__ ran before the refusal"
