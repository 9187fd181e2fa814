"""The Dockerfile, checked by reading it (no Docker engine here): every path it copies
from the build context exists and is not excluded by .dockerignore, the stages it
copies from exist, the final stage runs the release binary as a numeric non-root user,
and the ports it exposes and binds are the configuration's defaults.

    python3 -m unittest discover -s helm/tests -v      (make helm-lint)
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import unittest
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_RS = ROOT / "libs" / "common" / "src" / "config.rs"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Instructions with line continuations joined; comments and parser directives
    dropped. Returns the global ARGs and the stages."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, args = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            parts = instruction.args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG may precede FROM"
            key, _, value = instruction.args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY or ADD."""
    if instruction.args.startswith("["):
        words = json.loads(instruction.args)
        flags: dict[str, str] = {}
    else:
        words = shlex.split(instruction.args)
        flags = {}
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            flags[key] = value
    return flags, words[:-1], words[-1]


def ignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also excludes what is
    under a matched directory."""
    result = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negate, pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.split("/")[-1], pattern[3:])
            ):
                result = not negate
                break
    return result


def config_defaults() -> dict[str, int]:
    """The default ports in libs/common/src/config.rs."""
    source = CONFIG_RS.read_text()
    ports = {
        f"{name}_GRPC_ADDR": int(port)
        for name, port in re.findall(r'Endpoint::from_env\("([A-Z]+)",\s*(\d+)\)', source)
    }
    for name in ("GATEWAY_ADDR", "ADMIN_ADDR"):
        match = re.search(rf'"{name}",\s*SocketAddr::from\(\(\[[\d, ]+\],\s*(\d+)\)\)', source)
        assert match, f"no default for {name} in {CONFIG_RS}"
        ports[name] = int(match.group(1))
    return ports


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.args, cls.stages = parse(DOCKERFILE.read_text())
        cls.final = cls.stages[-1]
        cls.names = {stage.name for stage in cls.stages if stage.name}

    def env(self, stage: Stage) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in stage.all("ENV"):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def test_multi_stage_with_node_rust_and_a_small_final_image(self):
        self.assertGreaterEqual(len(self.stages), 3)
        bases = " ".join(stage.base for stage in self.stages[:-1])
        self.assertIn("node:", bases)
        self.assertIn("rust:", bases)
        self.assertTrue(
            self.final.base.startswith("gcr.io/distroless/cc") or "slim" in self.final.base,
            f"final image {self.final.base} is neither distroless cc nor a slim Debian",
        )
        for stage in self.stages:
            base = stage.base
            for key, value in self.args.items():
                base = base.replace(f"${{{key}}}", value)
            self.assertRegex(base, r":[^:]+$", f"{stage.base} names no tag")
            self.assertNotRegex(base, r":latest$", f"{stage.base} is not pinned")

    def test_every_copied_path_exists_and_is_in_the_context(self):
        patterns = ignore_patterns()
        checked = 0
        for stage in self.stages:
            for instruction in stage.all("COPY") + stage.all("ADD"):
                flags, sources, _ = copy_sources(instruction)
                if "from" in flags:
                    self.assertIn(flags["from"], self.names, f"line {instruction.line}: no stage {flags['from']}")
                    continue
                for source in sources:
                    matches = list(ROOT.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else [ROOT / source]
                    self.assertTrue(matches and all(m.exists() for m in matches), f"line {instruction.line}: {source} does not exist")
                    self.assertFalse(ignored(source, patterns), f"line {instruction.line}: {source} is excluded by .dockerignore")
                    checked += 1
        self.assertGreater(checked, 0)

    def test_context_keeps_what_the_build_reads_and_drops_the_rest(self):
        patterns = ignore_patterns()
        for path in ("Cargo.lock", "proto/atelier", "libs/proto/build.rs", "services/workflow/catalogue.json", "gateway/web/package.json"):
            self.assertFalse(ignored(path, patterns), f"{path} is excluded from the build context")
        for path in ("target/debug/atelier", "gateway/web/node_modules/react", "gateway/web/dist/index.html", ".git/HEAD", "data/auth.db"):
            self.assertTrue(ignored(path, patterns), f"{path} is sent to the build context")

    def test_web_app_is_built_with_npm_ci_and_served_from_web_dir(self):
        web = next(stage for stage in self.stages if stage.base.startswith(("node:", "docker.io/library/node:")))
        runs = " && ".join(i.args for i in web.all("RUN"))
        self.assertIn("npm ci", runs)
        self.assertIn("npm run build", runs)
        self.assertTrue((ROOT / "gateway/web/package-lock.json").exists(), "npm ci needs package-lock.json")
        copies = [copy_sources(i) for i in self.final.all("COPY")]
        web_copy = [dest for flags, sources, dest in copies if flags.get("from") == web.name and any(s.rstrip("/").endswith("dist") for s in sources)]
        self.assertEqual(len(web_copy), 1, "the final image copies gateway/web/dist once")
        self.assertEqual(self.env(self.final).get("WEB_DIR", "").rstrip("/"), web_copy[0].rstrip("/"))

    def test_release_binary_is_the_entrypoint(self):
        build = next(stage for stage in self.stages if "rust:" in stage.base)
        runs = " ".join(i.args for i in build.all("RUN"))
        self.assertRegex(runs, r"cargo build\b[^&]*--release")
        self.assertRegex(runs, r"cargo build\b[^&]*(-p|--package) atelier")
        self.assertIn("--locked", runs)
        (entrypoint,) = self.final.all("ENTRYPOINT")
        command = json.loads(entrypoint.args)
        self.assertIsInstance(command, list, "exec form: there is no shell in the final image")
        copies = [copy_sources(i) for i in self.final.all("COPY")]
        binaries = [dest for flags, sources, dest in copies if flags.get("from") == build.name and any(s.endswith("/atelier") for s in sources)]
        self.assertEqual(command[0], binaries[0])
        self.assertTrue(command[0].endswith("/atelier"))
        (cmd,) = self.final.all("CMD")
        self.assertEqual(json.loads(cmd.args), ["serve"])

    def test_final_stage_runs_as_numeric_non_root(self):
        users = self.final.all("USER")
        self.assertTrue(users, "the final stage sets no USER")
        user = users[-1].args
        uid, _, gid = user.partition(":")
        self.assertRegex(uid, r"^\d+$", "a numeric UID lets Kubernetes check runAsNonRoot")
        self.assertNotEqual(int(uid), 0)
        if gid:
            self.assertNotEqual(int(gid), 0)
        self.assertEqual(self.final.all("RUN"), [], "the final stage has no shell to RUN with")
        data = self.env(self.final).get("DATA_DIR")
        owned = [copy_sources(i) for i in self.final.all("COPY")]
        self.assertTrue(
            any(flags.get("chown", "").startswith(uid) and dest.rstrip("/") == data for flags, _, dest in owned),
            "DATA_DIR is owned by the runtime user",
        )

    def test_exposed_ports_are_the_configuration_defaults(self):
        defaults = config_defaults()
        exposed = {int(p.split("/")[0]) for i in self.final.all("EXPOSE") for p in i.args.split()}
        self.assertEqual(exposed, set(defaults.values()))
        env = self.env(self.final)
        for name, port in defaults.items():
            self.assertEqual(env.get(name), f"0.0.0.0:{port}", f"{name} must bind every interface in a container")
        for name in ("AUTH", "IMAGE", "PROCESSING", "WORKFLOW", "USER"):
            self.assertEqual(env.get(f"{name}_URL"), f"https://127.0.0.1:{defaults[f'{name}_GRPC_ADDR']}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
