"""A process without the mesh credential refuses to start; the launcher makes one up for a local run."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from launcher.mesh_token import with_mesh_token
from servicekit.mesh_auth import TOKEN_VARIABLE, MeshAuthError, MeshCredentials
from servicekit.settings import MeshSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOMAGIK_", "OMNI_", "ENVIRONMENT"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


async def start_alone(module: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run `python -m module` until it exits (it must, within 30 s); returns its status and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize("module", ["services.tracing", "gateway"])
async def test_a_process_without_the_mesh_token_refuses_to_start(module: str, tmp_path: Path) -> None:
    env = clean_env(AUTOMAGIK_OMNI_API_KEY="admin", AUTOMAGIK_OMNI_SQLITE_DATABASE_PATH=str(tmp_path / "omni.db"))
    code, output = await start_alone(module, env, tmp_path)
    assert code == 2
    assert TOKEN_VARIABLE in output


def test_production_wants_a_long_token_or_mtls() -> None:
    short = MeshSettings(_env_file=None, environment="production", mesh_token="short")
    with pytest.raises(MeshAuthError, match=TOKEN_VARIABLE):
        MeshCredentials.from_settings(short, "router").require(production=True)
    MeshCredentials.from_settings(short, "router").require(production=False)  # development accepts it
    long = MeshSettings(_env_file=None, environment="production", mesh_token="x" * 40)
    MeshCredentials.from_settings(long, "router").require(production=True)


def test_half_configured_mtls_names_what_is_missing() -> None:
    half = MeshSettings(_env_file=None, mtls_cert="/etc/omni/router.pem")
    with pytest.raises(MeshAuthError, match="AUTOMAGIK_OMNI_MTLS_KEY, AUTOMAGIK_OMNI_MTLS_CA"):
        MeshCredentials.from_settings(half, "router")


def test_reflection_is_forced_off_in_production() -> None:
    assert MeshSettings(_env_file=None).reflection_enabled
    assert not MeshSettings(_env_file=None, grpc_reflection=False).reflection_enabled
    production = MeshSettings(_env_file=None, environment="production", grpc_reflection=True)
    assert not production.reflection_enabled


def test_the_launcher_generates_a_token_per_run_unless_one_is_configured() -> None:
    first = with_mesh_token({"PATH": "/bin"}, read_dotenv=False)
    second = with_mesh_token({"PATH": "/bin"}, read_dotenv=False)
    assert len(first[TOKEN_VARIABLE]) >= 32
    assert first[TOKEN_VARIABLE] != second[TOKEN_VARIABLE]
    assert with_mesh_token({TOKEN_VARIABLE: "mine"}, read_dotenv=False)[TOKEN_VARIABLE] == "mine"
    assert TOKEN_VARIABLE not in with_mesh_token({"ENVIRONMENT": "production"}, read_dotenv=False)
    mtls = {"AUTOMAGIK_OMNI_MTLS_CERT": "c", "AUTOMAGIK_OMNI_MTLS_KEY": "k", "AUTOMAGIK_OMNI_MTLS_CA": "a"}
    assert TOKEN_VARIABLE not in with_mesh_token(mtls, read_dotenv=False)
