"""nox sessions. They run in the environment nox itself runs in (`.venv`, made by scripts/install.sh), because the
torch stack is ~6 GB and must not be reinstalled per session.
"""

import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

PYTEST = [sys.executable, "-m", "pytest"]


@nox.session
def tests(session):
    """The fast suite (< 15 minutes on 2 cores): everything not marked slow."""
    session.run(*PYTEST, "-q", "-m", "not slow and not browser", "--timeout=600", *session.posargs,
                env={"OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"})


@nox.session
def slow(session):
    """The slow tests: long training runs, crash trials, big metric checks."""
    session.run(*PYTEST, "-q", "-m", "slow", "--timeout=3600", *session.posargs,
                env={"OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"})


@nox.session
def browser(session):
    """Render the HTML report in headless Chromium and check the screenshot (needs `apt-get install chromium`)."""
    import shutil

    if not shutil.which("chromium"):
        session.error("Debian's chromium is needed: apt-get install chromium")
    session.run(*PYTEST, "-q", "-m", "browser", *session.posargs)


@nox.session
def history(session):
    """Append this commit's row to the CI regression history (fast world benchmark; `.ci/run` calls it).
    One thread: the seeded figures must not depend on the core count, and reports/history.jsonl was measured so."""
    session.run(sys.executable, "-m", "benchmarks.ci_history", *session.posargs,
                env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})


@nox.session
def lint(session):
    session.run(sys.executable, "-m", "ruff", "check", "mars_eval", "mars_ref", "tests", "benchmarks", "noxfile.py")


@nox.session
def bench(session):
    """Speed and memory benchmarks; results go to benchmarks/results/*.json."""
    session.run(sys.executable, "-m", "benchmarks.run", *session.posargs, env={"TOKENIZERS_PARALLELISM": "false"})
