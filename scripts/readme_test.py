#!/usr/bin/env python3
"""Runs every shell command the documentation shows, so that none drifts from the code.

Each Markdown file given (default: README.md, docs/*.md and the crates' READMEs) is read
for its ```sh and ```bash blocks. The blocks of one file run in order, as one bash script
(so a variable exported or a service started in one block is there for the next), in a
fresh temporary directory, with `set -eu`: a command that fails fails the run, naming the
file and the line (a pipeline fails as the user would see it: by its last command).

What the runner changes, everywhere:
* `cargo run --release -p shardflake-cli --` runs the `shardflake` binary the test suite
  built (CI builds one profile; the release build is the same code), and `shardflake` is
  that binary;
* `shardflake serve` and `shardflake coordinator` start in the background, and the next
  command runs once they log `listening` (at most 60 s); every service is stopped when the
  file is done;
* `curl` fails on an HTTP error (`--fail-with-body`), so a refused request fails the run;
* `cargo` runs in the repository, `scripts/...` are the repository's scripts.

What a block asks for, in HTML comments on the lines just before it (visible in the
Markdown source, not in the rendered page):
* `<!-- readme-test skip: REASON -->`: the block is not run (a deployment over several
  hosts, a command that runs this test suite itself, ...);
* `<!-- readme-test drop "TEXT": REASON -->`: the block's lines containing TEXT are not run;
* `<!-- readme-test short "FROM" "TO": REASON -->`: FROM is replaced by TO in the block (a
  long command in a short form: fewer ids, seconds or seeds).
A directive without a reason is an error.

    scripts/readme_test.py [--bin PATH] [--list] [FILE ...]
"""

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE_START_S = 60
FILE_TIMEOUT_S = 600
DIRECTIVE = re.compile(r"^\s*<!--\s*readme-test\s+(.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip:\s*(\S.*)$")
DROP = re.compile(r'^drop\s+"([^"]+)":\s*(\S.*)$')
SHORT = re.compile(r'^short\s+"([^"]*)"\s+"([^"]*)":\s*(\S.*)$')
SERVICE = re.compile(r"^(?:[A-Z_]+=\S*\s+)*shardflake\s+(serve|coordinator)\b")
RELEASE_CLI = "cargo run --release -p shardflake-cli --"


class Block:
    def __init__(self, path, line, text, directives):
        self.path, self.line, self.text = path, line, text
        self.skip, self.drops, self.shorts = None, [], []
        for d in directives:
            self.apply(d)

    def apply(self, directive):
        for pattern, kind in ((SKIP, "skip"), (DROP, "drop"), (SHORT, "short")):
            m = pattern.match(directive)
            if m:
                if kind == "skip":
                    self.skip = m.group(1)
                elif kind == "drop":
                    self.drops.append(m.group(1))
                else:
                    self.shorts.append((m.group(1), m.group(2)))
                return
        sys.exit(f"{self.path}:{self.line}: unknown or reasonless readme-test directive: {directive}")

    def commands(self):
        """The block's commands as the runner runs them: `(source line, command)`."""
        text = self.text
        for old, new in self.shorts:
            if old not in text:
                sys.exit(f"{self.path}:{self.line}: short \"{old}\" is not in the block")
            text = text.replace(old, new)
        out, pending, first = [], "", None
        for i, raw in enumerate(text.split("\n")):
            if first is None:
                first = self.line + 1 + i
            line = raw.rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command, pending = (pending + line).strip(), ""
            start, first = first, None
            if not command or command.startswith("#"):
                continue
            if any(d in command for d in self.drops):
                continue
            out.append((start, command))
        return out


def blocks_of(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(sh|bash)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        indent = len(fence.group(1))
        directives, j = [], i - 1
        while j >= 0 and DIRECTIVE.match(lines[j]):
            directives.insert(0, DIRECTIVE.match(lines[j]).group(1))
            j -= 1
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        body = "\n".join(l[indent:] if l[:indent].isspace() else l for l in lines[i + 1:end])
        blocks.append(Block(os.path.relpath(path, ROOT), i + 1, body, directives))
        i = end + 1
    return blocks


PREAMBLE = r"""
# No pipefail: a pipeline ends as the user sees it end (`... | head` is fine).
set -eu
trap 'echo "FAILED: $READMELINE" >&2' ERR
READMELINE="(preamble)"
cd "$WORK"
export PATH="$BIN_DIR:$PATH"
cargo() { (cd "$ROOT" && command cargo "$@"); }
curl() { command curl --fail-with-body --silent --show-error --max-time 30 "$@"; echo; }
start_service() {
  local log="$WORK/service-$((++SERVICES)).log"
  bash -c "$1" >"$log" 2>&1 </dev/null &
  local pid=$! deadline=$((SECONDS + SERVICE_START))
  until grep -q listening "$log"; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "the service did not start: $1" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
}
SERVICES=0
trap 'jobs -p | xargs -r kill 2>/dev/null; wait 2>/dev/null || true' EXIT
"""


def script_of(blocks):
    out = [PREAMBLE]
    for b in blocks:
        if b.skip:
            continue
        for line, command in b.commands():
            command = command.replace(RELEASE_CLI, "shardflake")
            command = re.sub(r"(^|[\s;&|(])scripts/", r'\1"$ROOT"/scripts/', command)
            where = f"{b.path}:{line}"
            out.append(f"echo {shlex.quote('+ ' + where + ': ' + command)}")
            out.append(f"READMELINE={shlex.quote(where)}")
            if SERVICE.match(command):
                out.append(f"start_service {shlex.quote(command)}")
            else:
                out.append(command)
    return "\n".join(out) + "\n"


def run_file(path, bin_dir):
    blocks = blocks_of(path)
    runnable = [b for b in blocks if not b.skip]
    skipped = [b for b in blocks if b.skip]
    if not runnable:
        for b in skipped:
            print(f"  {b.path}:{b.line}: skipped: {b.skip}")
        return 0, len(skipped)
    work = tempfile.mkdtemp(prefix="shardflake-readme.")
    env = dict(os.environ, WORK=work, ROOT=ROOT, BIN_DIR=bin_dir, SERVICE_START=str(SERVICE_START_S))
    for var in [v for v in env if v.startswith("SHARDFLAKE_")]:
        del env[var]
    script = os.path.join(work, "readme.sh")
    with open(script, "w") as f:
        f.write(script_of(blocks))
    started = time.monotonic()
    try:
        r = subprocess.run(["bash", script], env=env, timeout=FILE_TIMEOUT_S)
        status = r.returncode
    except subprocess.TimeoutExpired:
        print(f"{path}: took longer than {FILE_TIMEOUT_S} s", file=sys.stderr)
        status = 1
    print()
    for b in skipped:
        print(f"  {b.path}:{b.line}: skipped: {b.skip}")
    print(f"== {os.path.relpath(path, ROOT)}: {len(runnable)} blocks run, {len(skipped)} skipped, "
          f"{time.monotonic() - started:.0f} s, {'ok' if status == 0 else 'FAILED'}")
    return status, len(skipped)


def self_test():
    """The runner itself: a failing command fails the file, a shortened block runs shortened,
    a skipped one does not run, and a directive without a reason is refused."""
    cases = [
        ("```sh\ntrue\nfalse\ntrue\n```\n", 1),
        ("<!-- readme-test short \"false\" \"true\": the short form -->\n```sh\nfalse\n```\n", 0),
        ("<!-- readme-test skip: never runs here -->\n```sh\nfalse\n```\n", 0),
        ("<!-- readme-test drop \"false\": not here -->\n```sh\ntrue\nfalse\n```\n", 0),
        ("```sh\ncurl -s http://127.0.0.1:9/nothing-listens-here\n```\n", 1),
    ]
    work = tempfile.mkdtemp(prefix="shardflake-readme-self.")
    for i, (text, want) in enumerate(cases):
        path = os.path.join(work, f"case{i}.md")
        open(path, "w").write(text)
        status, _ = run_file(path, work)
        if (status != 0) != (want != 0):
            sys.exit(f"self-test case {i} ended {status}, expected {'failure' if want else 'success'}: {text!r}")
    reasonless = os.path.join(work, "reasonless.md")
    open(reasonless, "w").write("<!-- readme-test skip: -->\n```sh\ntrue\n```\n")
    r = subprocess.run([sys.executable, __file__, "--list", reasonless], capture_output=True, text=True)
    if r.returncode == 0:
        sys.exit("self-test: a directive without a reason was accepted")
    print("readme_test self-test: ok")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*")
    p.add_argument("--bin", default=os.path.join(ROOT, "target/debug/shardflake"),
                   help="the shardflake binary the commands run (default: the debug build)")
    p.add_argument("--list", action="store_true", help="print the commands as they would run")
    p.add_argument("--self-test", action="store_true",
                   help="check that the runner fails a failing command and a reasonless directive")
    a = p.parse_args()
    if a.self_test:
        return self_test()
    files = a.files or (["README.md"] + sorted(glob.glob("docs/*.md")) + sorted(glob.glob("crates/*/README.md")))
    files = [os.path.join(ROOT, f) if not os.path.isabs(f) else f for f in files]
    if a.list:
        for f in files:
            print(f"## {os.path.relpath(f, ROOT)}")
            print(script_of(blocks_of(f)))
        return 0
    bin_path = os.path.abspath(a.bin)
    if not os.access(bin_path, os.X_OK):
        sys.exit(f"no shardflake binary at {bin_path}: build it first (cargo build -p shardflake-cli)")
    bin_dir = tempfile.mkdtemp(prefix="shardflake-readme-bin.")
    os.symlink(bin_path, os.path.join(bin_dir, "shardflake"))
    failed = 0
    for f in files:
        status, _ = run_file(f, bin_dir)
        failed += status != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
