"""scripts/inflight.sh: a session's unfinished runs carried, checksummed, to the next session's working directory."""
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "inflight.sh"
ZEN4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
ZEN5 = ZEN4.replace(": 25", ": 26").replace(": 17", ": 2")
ZEN4_NO_BF16 = ZEN4.replace(" avx512_bf16", "")   # the same model with AVX512-BF16 masked: fp32, not bf16


def checkout(tmp_path: Path, cpu: str = ZEN4) -> Path:
    """A checkout with the script, a study file, two runs of it (one unfinished, one finished)."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "inflight.sh")
    (root / "studies").mkdir()
    (root / "studies" / "s.toml").write_text('name = "s"\n')
    (root / "cpuinfo").write_text(cpu)
    unfinished = root / "runs" / "s" / "arm" / "seed1-abc"
    unfinished.mkdir(parents=True)
    (unfinished / "checkpoint.pt").write_bytes(b"weights at epoch 2")
    (unfinished / "checkpoint.pt.sha256").write_text("a" * 64 + "\n")   # the checksums the run checks at resume
    (unfinished / "best.pt").write_bytes(b"best weights")
    (unfinished / "config.toml").write_text('name = "arm"\n')
    (unfinished / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    (unfinished / "checkpoint.pt.tmp").write_bytes(b"half a write")
    done = root / "runs" / "s" / "arm" / "seed0-def"
    done.mkdir(parents=True)
    (done / "checkpoint.pt").write_bytes(b"last weights")
    (done / "final.json").write_text("{}")
    (root / "runs" / "s" / "_shared").mkdir()
    (root / "runs" / "s" / "_shared" / "select-x-seed0.pt").write_bytes(b"shared")
    return root


def inflight(root: Path, *args: str, cpu: str | None = None, python: str = "/bin/false") -> subprocess.CompletedProcess:
    if cpu is not None:
        (root / "cpuinfo").write_text(cpu)
    return subprocess.run(["bash", str(root / "scripts" / "inflight.sh"), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CPUINFO": str(root / "cpuinfo"), "PYTHON": python})


def test_an_unfinished_run_is_carried_and_restored_byte_for_byte(tmp_path):
    root = checkout(tmp_path)
    out = inflight(root, "carry", "s")
    assert out.returncode == 0 and "1 unfinished run(s) and 0 shared file(s) a later run will take carried" in out.stdout, out.stderr
    carried = root / "results" / "s" / "inflight"
    files = sorted(str(p.relative_to(carried)) for p in carried.rglob("*") if p.is_file())
    # only the unfinished run, without the half-written temporary file; the finished run and the
    # shared folder stay behind
    assert files == ["SHA256SUMS", "arm/seed1-abc/CPU", "arm/seed1-abc/best.pt", "arm/seed1-abc/checkpoint.pt",
                     "arm/seed1-abc/checkpoint.pt.sha256", "arm/seed1-abc/config.toml", "arm/seed1-abc/metrics.jsonl"]
    assert (carried / "arm/seed1-abc/CPU").read_text() == "AuthenticAMD 25 17 avx512_bf16\n"

    shutil.rmtree(root / "runs")   # the next session's checkout: no runs/ folder
    out = inflight(root, "restore", "s")
    assert out.returncode == 0 and "1 unfinished run(s) restored" in out.stdout, out.stderr
    run = root / "runs" / "s" / "arm" / "seed1-abc"
    assert (run / "checkpoint.pt").read_bytes() == b"weights at epoch 2"
    assert (run / "checkpoint.pt.sha256").read_text() == "a" * 64 + "\n"
    assert (run / "best.pt").read_bytes() == b"best weights"
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'


def test_restore_keeps_a_run_directory_that_is_already_there(tmp_path):
    root = checkout(tmp_path)
    inflight(root, "carry", "s")
    (root / "runs" / "s" / "arm" / "seed1-abc" / "checkpoint.pt").write_bytes(b"weights at epoch 5")
    out = inflight(root, "restore", "s")
    assert "0 unfinished run(s) restored" in out.stdout
    assert (root / "runs" / "s" / "arm" / "seed1-abc" / "checkpoint.pt").read_bytes() == b"weights at epoch 5"


@pytest.mark.parametrize("damage", ["changed", "unlisted"])
def test_nothing_is_restored_when_a_checksum_does_not_match(tmp_path, damage):
    root = checkout(tmp_path)
    inflight(root, "carry", "s")
    shutil.rmtree(root / "runs")
    carried = root / "results" / "s" / "inflight" / "arm" / "seed1-abc"
    if damage == "changed":
        (carried / "checkpoint.pt").write_bytes(b"weights at epoch 9")
    else:   # a file SHA256SUMS does not list is not restored unchecked: the list is rewritten without it
        sums = root / "results" / "s" / "inflight" / "SHA256SUMS"
        sums.write_text("".join(line for line in sums.read_text().splitlines(True) if "best.pt" not in line))
        (carried / "best.pt").write_bytes(b"other weights")
    out = inflight(root, "restore", "s")
    if damage == "changed":
        assert out.returncode == 0 and "does not match SHA256SUMS; nothing restored" in out.stdout
        assert not (root / "runs").exists()
    else:
        assert "1 unfinished run(s) restored" in out.stdout
        assert not (root / "runs" / "s" / "arm" / "seed1-abc" / "best.pt").exists()


@pytest.mark.parametrize("cpu, kind", [(ZEN5, "AuthenticAMD 26 2 avx512_bf16"), (ZEN4_NO_BF16, "AuthenticAMD 25 17 avx512f")])
def test_a_run_carried_from_another_kind_of_cpu_starts_over_and_stays_carried(tmp_path, cpu, kind):
    root = checkout(tmp_path)
    inflight(root, "carry", "s")
    shutil.rmtree(root / "runs")
    out = inflight(root, "restore", "s", cpu=cpu)
    assert out.returncode == 0 and "0 unfinished run(s) restored" in out.stdout
    assert f"carried from another CPU (AuthenticAMD 25 17 avx512_bf16; this one: {kind}); it starts over here" in out.stdout
    assert not (root / "runs" / "s" / "arm").exists()
    # a snapshot here, before a worker starts the run over, keeps it carried for a session on its CPU
    out = inflight(root, "carry", "s")
    assert "0 unfinished run(s)" in out.stdout and "1 carried earlier and not restored here kept" in out.stdout
    out = inflight(root, "restore", "s", cpu=ZEN4)
    assert "1 unfinished run(s) restored" in out.stdout
    assert (root / "runs" / "s" / "arm" / "seed1-abc" / "checkpoint.pt").read_bytes() == b"weights at epoch 2"


def test_a_run_carried_earlier_and_trained_here_since_is_carried_anew(tmp_path):
    root = checkout(tmp_path)
    inflight(root, "carry", "s")
    (root / "runs" / "s" / "arm" / "seed1-abc" / "checkpoint.pt").write_bytes(b"weights at epoch 7")
    out = inflight(root, "carry", "s")
    assert "1 unfinished run(s)" in out.stdout and "kept" not in out.stdout
    assert (root / "results" / "s" / "inflight" / "arm" / "seed1-abc" / "checkpoint.pt").read_bytes() == b"weights at epoch 7"


def test_a_carry_with_nothing_unfinished_removes_the_last_one(tmp_path):
    root = checkout(tmp_path)
    inflight(root, "carry", "s")
    (root / "runs" / "s" / "arm" / "seed1-abc" / "final.json").write_text("{}")   # it finished since
    out = inflight(root, "carry", "s")
    assert "0 unfinished run(s) and 0 shared file(s)" in out.stdout
    assert not (root / "results" / "s" / "inflight").exists()


@pytest.mark.parametrize("args, message", [(["move", "s"], "unknown action 'move'"),
                                            (["carry", "nosuch"], "no studies/nosuch.toml; studies: s"),
                                            (["carry"], "usage: scripts/inflight.sh")])
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path, args, message):
    root = checkout(tmp_path)
    out = inflight(root, *args)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.splitlines()) == 1
    assert not (root / "results").exists()


def test_only_the_shared_weights_a_later_run_takes_are_carried(tmp_path):
    """The study's plan names the shared files runs still to come will take (`shared_wanted`, its
    own test): a stand-in for the Python that asks it names one of the two here."""
    root = checkout(tmp_path)
    shared = root / "runs" / "s" / "_shared"
    for name in ("select-a-seed0.pt", "select-b-seed0.pt"):
        (shared / name).write_bytes(name.encode())
        (shared / f"{name}.sha256").write_text("x\n")
    (root / "results" / "s").mkdir(parents=True)
    (root / "results" / "s" / "results.db").write_bytes(b"")
    stub = tmp_path / "python"
    stub.write_text("#!/bin/sh\necho select-a-seed0.pt\necho select-gone-seed1.pt\n")
    stub.chmod(0o755)
    out = inflight(root, "carry", "s", python=str(stub))
    assert "1 unfinished run(s) and 1 shared file(s) a later run will take carried" in out.stdout, out.stderr
    carried = root / "results" / "s" / "inflight" / "_shared"
    assert sorted(p.name for p in carried.iterdir()) == ["select-a-seed0.pt", "select-a-seed0.pt.sha256"]
    shutil.rmtree(root / "runs")
    (root / "runs" / "s" / "_shared").mkdir(parents=True)   # a shared folder there already: files are added
    out = inflight(root, "restore", "s")
    assert (root / "runs" / "s" / "_shared" / "select-a-seed0.pt").read_bytes() == b"select-a-seed0.pt"
    assert (root / "runs" / "s" / "arm" / "seed1-abc" / "checkpoint.pt").exists()


def test_a_python_that_cannot_list_the_shared_files_carries_none_and_says_so(tmp_path):
    root = checkout(tmp_path)
    (root / "results" / "s").mkdir(parents=True)
    (root / "results" / "s" / "results.db").write_bytes(b"")
    out = inflight(root, "carry", "s")   # /bin/false
    assert "could not list the shared files later runs take; none carried" in out.stdout
    assert "1 unfinished run(s) and 0 shared file(s)" in out.stdout
