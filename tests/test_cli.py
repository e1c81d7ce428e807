"""CLI conventions that scripts rely on: version, one-line usage errors, exit code 2."""

from conftest import nasctl
from nasctl import __version__


def test_version():
    assert nasctl("--version", check=0).stdout.strip() == f"nasctl {__version__}"


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    for args, msg in [
        (["profile", "--device", "local-cpu"], "profile needs --archs and --output"),
        (["sample", "-o", tmp_path / "a.parquet", "--n", "abc"], "Invalid value for '--n'"),
        (["bogus"], "No such command 'bogus'"),
        (["sample", "-o", tmp_path / "a.parquet", "--stratify", "flops"], "Invalid value for '--stratify'"),
    ]:
        p = nasctl(*args, check=2)
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_sample_json_and_help(tmp_path):
    import json

    out = tmp_path / "a.csv"
    s = json.loads(nasctl("sample", "--space", "fbnet", "--n", 7, "-o", out, "--json", check=0).stdout)
    assert s["n"] == 7 and s["space"] == "fbnet" and out.read_text().startswith("arch_id,arch,space")
    for cmd in ("sample", "profile", "fit-predictor", "predict"):
        assert "Usage" in nasctl(cmd, "--help", check=0).stdout
