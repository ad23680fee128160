"""The CI gate on the committed regression history: this commit's ci-benchmark figures against a baseline row.

    python -m benchmarks.history_gate --current FILE [--committed reports/history.jsonl] [--tolerance 0.02]

FILE is a copy of the committed history with this commit's rows appended by `benchmarks.ci_history` (`.ci/run`
makes it; the committed file itself is never modified by CI). The baseline, per metric, is the newest row of
- the rows this commit recorded: rows stamped with HEAD, or rows stamped with HEAD's parent that HEAD's own diff
  added to the committed file (a row measured before committing carries the parent's sha: a commit cannot name
  itself);
- else the whole committed file (the newest commit that recorded figures, in the charts' order: commit time).

Only rows of this run's machine kind are compared (`machine`: architecture, cores and torch's CPU kernel family,
e.g. x86_64-2cpu-avx2: AVX2 and AVX-512 kernels round differently, and a seeded training run amplifies that past any
useful tolerance). Deterministic metrics (losses, PSNR, seeded FID / KID) fail the gate when they differ from the
baseline by more than the relative tolerance (default 2 %: floats differ a little between machines of one kind). Timings
(`mars_eval.report.history.is_timing`) are printed and never fail. To accept a deliberate change, record it:
`nox -s history -- --history reports/history.jsonl` and commit the file with the change.
Exit code 0: pass; 1: a deterministic metric moved and the commit did not record its new value.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mars_eval.report.history import is_timing, order, rel_change

DEFAULT_TOLERANCE = 0.02
COMMITTED = Path("reports/history.jsonl")


@dataclass(frozen=True)
class Check:
    metric: str
    baseline: float | None
    value: float | None
    timing: bool
    failed: bool

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.value is None:
            return None
        return rel_change(self.baseline, self.value)

    def line(self, tol: float) -> str:
        b = "-" if self.baseline is None else f"{self.baseline:.4f}"
        v = "-" if self.value is None else f"{self.value:.4f}"
        c = "" if self.change is None else f"{self.change:+.2%}"
        if self.timing:
            verdict = "timing, not gated"
        elif self.value is None:
            verdict = "not measured by this commit"
        elif self.baseline is None:
            verdict = "new metric"
        else:
            verdict = f"MOVED beyond {tol:.0%}" if self.failed else "ok"
        return f"{self.metric:32s} {b:>12s} {v:>12s} {c:>9s}  {verdict}"


def _key(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def same_commit(a: str, b: str) -> bool:
    return bool(a) and bool(b) and a != "unknown" and (a.startswith(b) or b.startswith(a))


def recorded_rows(committed: list[dict], head: str, parent: str, parent_rows: list[dict] | None) -> list[dict]:
    """The committed rows that record this commit's figures: stamped with HEAD, or stamped with its parent and
    added by HEAD's diff (`parent_rows` is the file at the parent; None when the parent cannot be read, e.g. in a
    shallow clone)."""
    mine = [r for r in committed if same_commit(str(r.get("commit", "")), head)]
    if mine or parent_rows is None:
        return mine
    before = {_key(r) for r in parent_rows}
    return [r for r in committed if _key(r) not in before and same_commit(str(r.get("commit", "")), parent)]


def latest(rows: list[dict], benchmark: str = "ci") -> dict[str, dict]:
    """metric -> its newest row among rows of one benchmark (by commit time, then file order)."""
    out: dict[str, dict] = {}
    for r in sorted(rows, key=order):
        if r.get("benchmark", benchmark) == benchmark:
            out[r["metric"]] = r
    return out


def compare(baseline: dict[str, float], current: dict[str, float], tol: float) -> list[Check]:
    checks = []
    for m in list(dict.fromkeys([*current, *baseline])):
        b, v = baseline.get(m), current.get(m)
        timing = is_timing(m)
        moved = b is not None and v is not None and abs(rel_change(b, v)) > tol
        checks.append(Check(m, b, v, timing, failed=moved and not timing))
    return checks


def gate(committed: list[dict], current: list[dict], head: str, parent: str, parent_rows: list[dict] | None,
         tol: float = DEFAULT_TOLERANCE) -> tuple[str, list[Check]]:
    """(where the baseline came from, one Check per metric). `current` is this commit's measured rows."""
    machine = current[-1].get("machine") if current else None
    committed = [r for r in committed if r.get("machine") == machine]  # figures compare within a machine kind
    mine = recorded_rows(committed, head, parent, parent_rows)
    base_rows, source = (mine, "recorded by this commit") if mine else (committed, "newest committed row")
    base = latest(base_rows)
    if base:
        first = next(iter(base.values()))
        source += f" (commit {first.get('commit', '?')}, {first.get('machine', '?')}, {first.get('time', '?')})"
    else:
        source = f"none: the committed history has no ci rows from machine kind {machine} (record them)"
    now = {m: float(r["value"]) for m, r in latest(current).items()}
    return source, compare({m: float(r["value"]) for m, r in base.items()}, now, tol)


# ---- git and files --------------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def commit(repo: Path, rev: str) -> str:
    """The full sha of `rev`, or '' (no repository, or no such commit, e.g. the parent in a shallow clone)."""
    return (_git(repo, "rev-parse", "--verify", "--quiet", rev) or "").strip()


def parent_rows(repo: Path, committed: Path) -> list[dict] | None:
    """The committed file as HEAD's parent had it ([] when it had none; None when there is no readable parent)."""
    if not commit(repo, "HEAD^"):
        return None
    top = (_git(repo, "rev-parse", "--show-toplevel") or "").strip()
    if not top:
        return None
    try:
        rel = committed.resolve().relative_to(Path(top).resolve()).as_posix()
    except ValueError:  # the file is not in this repository
        return None
    text = _git(repo, "show", f"HEAD^:{rel}")
    return [] if text is None else [json.loads(x) for x in text.splitlines() if x.strip()]


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def appended(committed: list[dict], current: list[dict]) -> list[dict]:
    """The rows `current` has after the committed ones (it must start with them)."""
    if [_key(r) for r in current[: len(committed)]] != [_key(r) for r in committed]:
        raise SystemExit("error: the current history does not start with the committed rows")
    return current[len(committed):]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--committed", type=Path, default=COMMITTED, help="the committed history (not modified)")
    ap.add_argument("--current", type=Path, required=True,
                    help="a copy of the committed history with this commit's rows appended")
    ap.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                    help="relative tolerance for deterministic metrics (default %(default)s)")
    args = ap.parse_args(argv)
    committed = read_rows(args.committed)
    new = appended(committed, read_rows(args.current))
    if not new:
        print(f"error: {args.current} has no rows beyond the committed history", file=sys.stderr)
        return 1
    repo = args.committed.resolve().parent
    head = commit(repo, "HEAD")
    source, checks = gate(committed, new, head, commit(repo, "HEAD^"), parent_rows(repo, args.committed),
                          args.tolerance)
    print(f"history gate: commit {head[:12] or '?'} on {new[-1].get('machine', '?')} vs {source}; "
          f"tolerance {args.tolerance:.0%} on deterministic metrics")
    print(f"{'metric':32s} {'baseline':>12s} {'this commit':>12s} {'change':>9s}")
    for c in checks:
        print(c.line(args.tolerance))
    failed = [c.metric for c in checks if c.failed]
    if failed:
        print(f"FAIL: {', '.join(failed)} moved beyond {args.tolerance:.0%} and this commit did not record the new "
              f"values (run `nox -s history -- --history {COMMITTED}` and commit the file with the change)")
        return 1
    print("pass: no deterministic metric moved beyond the tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
