"""`make image-test`: the CPU image, run as the CPU overlay's Deployment runs it.

The container spec is read from the rendered overlay (deploy/kubernetes/overlays/cpu) and
turned into `docker run` flags: its args and env, its securityContext (user, read-only root,
no capabilities, no privilege escalation), its volumes (emptyDirs as exec-allowed tmpfs owned
by the pod's user, the Memory emptyDir at /dev/shm as --shm-size, the ConfigMap and the Secret
as read-only bind mounts), its CPU and memory limits, its termination grace as the stop timeout.
Then, against that one container: /ready, embeddings through the openai client compared with
sentence-transformers, the user, the image's HEALTHCHECK on a non-default port, every log line
JSON but those no logging setting reaches (FOREIGN), and a `docker stop` that lets an in-flight request finish. Before it, a run with Docker's
default /dev/shm must stop at once, naming --shm-size.

Too slow for `make test` (one engine start, about two minutes on 2 cores). The summary it prints
goes in docs/container.md. With IMAGE_TEST_ENV="NAME=value ..." extra variables reach the
container (a vLLM setting to compare, say)."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from tests.deploy.manifests import gateway_container, one, render

IMAGE = os.environ.get("IMAGE", "embedding-gateway:cpu")
API_KEY = "image-test-key"
MODEL = "all-MiniLM-L6-v2"
TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "embeddings in a box"]
READY_TIMEOUT_S = 600


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quantity_bytes(text: str) -> int:
    """A Kubernetes quantity (2Gi, 512Mi, 1G) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", text).groups()  # type: ignore[union-attr]
    return int(number) * units.get(unit, 1)


def run_flags(port: int, files: Path) -> tuple[list[str], list[str]]:
    """`docker run` flags and the container's arguments, from the overlay's pod spec."""
    docs = render("cpu")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = gateway_container(docs)
    pod_security, security = pod["securityContext"], container["securityContext"]
    uid, gid = pod_security["runAsUser"], pod_security["runAsGroup"]
    flags = [
        f"--user={uid}:{gid}",
        f"--group-add={pod_security['fsGroup']}",
        # The host's network: the test needs no bridge, and the port is a free one.
        "--network=host",
        f"--stop-timeout={pod['terminationGracePeriodSeconds']}",
        # The image's HEALTHCHECK command, asked more often than every 30 s.
        "--health-interval=5s",
    ]
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [f"--cap-drop={cap}" for cap in security["capabilities"]["drop"]]
    if security.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"  # Docker's default too
    limits = container["resources"]["limits"]
    flags += [f"--cpus={limits['cpu']}", f"--memory={quantity_bytes(limits['memory'])}"]

    env = {e["name"]: e["value"] for e in container["env"]}
    env["GATEWAY_PORT"] = str(port)  # not the default: the HEALTHCHECK must follow it
    for item in os.environ.get("IMAGE_TEST_ENV", "").split():
        name, value = item.split("=", 1)
        env[name] = value
    flags += [f"--env={name}={value}" for name, value in env.items()]

    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume, path = volumes[mount["name"]], mount["mountPath"]
        if "emptyDir" in volume and volume["emptyDir"].get("medium") == "Memory":
            assert path == "/dev/shm"
            flags.append(f"--shm-size={quantity_bytes(volume['emptyDir']['sizeLimit'])}")
        elif "emptyDir" in volume:
            # An emptyDir: empty, writable by the pod's group (fsGroup), exec allowed (inductor
            # loads what it compiles from there); Docker's tmpfs is noexec unless told.
            size = quantity_bytes(volume["emptyDir"]["sizeLimit"])
            flags.append(f"--tmpfs={path}:rw,exec,uid={uid},gid={gid},mode=0770,size={size}")
        else:
            folder = files / mount["name"]
            folder.mkdir(mode=0o755)
            if "configMap" in volume:
                (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
                for name, text in configmap["data"].items():
                    (folder / name).write_text(text)
            else:  # the Secret with the API keys, which the operator creates
                (item,) = volume["secret"]["items"]
                (folder / item["path"]).write_text(API_KEY + "\n")
            for file in folder.iterdir():
                file.chmod(0o644)
            mode = "ro" if mount.get("readOnly") else "rw"
            flags.append(f"--volume={folder}:{path}:{mode}")
    return flags, container["args"]


def check_short_shm_names_the_flag() -> None:
    started = time.monotonic()
    result = subprocess.run(
        ["docker", "run", "--rm", "--network=host", f"--env=GATEWAY_PORT={free_port()}", IMAGE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "--shm-size=1g" in output, output[-2000:]
    print(f"default /dev/shm: exit 1 in {time.monotonic() - started:.1f} s, naming --shm-size")


def wait_ready(url: str, name: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        state = docker("inspect", "--format={{.State.Status}}", name)
        assert state == "running", docker("logs", "--tail=40", name, check=False)
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready after {READY_TIMEOUT_S} s")


def check_embeddings(url: str) -> None:
    import openai
    from sentence_transformers import SentenceTransformer

    from gateway.config import resolve_model_path

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=API_KEY)
    served = client.embeddings.create(model=MODEL, input=TEXTS)
    vectors = np.array([d.embedding for d in served.data])
    reference = SentenceTransformer(resolve_model_path(f"builtin:{MODEL}"), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    cosine = (vectors * reference).sum(axis=1)
    assert vectors.shape == (len(TEXTS), 384) and cosine.min() > 0.9999, cosine
    print(f"embeddings: {vectors.shape}, cosine to sentence-transformers >= {cosine.min():.6f}")


def throughput(url: str, seconds: float = 20.0, batch: int = 16, clients: int = 2) -> float:
    """Texts per second from `clients` closed loops sending `batch` short texts each."""
    texts = [f"sentence number {i} about containers and embeddings" for i in range(batch)]
    deadline = time.monotonic() + seconds

    def loop() -> int:
        done = 0
        with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http:
            while time.monotonic() < deadline:
                body = {"model": MODEL, "input": texts}
                http.post(f"{url}/v1/embeddings", json=body).raise_for_status()
                done += batch
        return done

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(lambda _: loop(), range(clients)))
    return total / (time.monotonic() - started)


def wait_healthy(name: str, timeout_s: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if docker("inspect", "--format={{.State.Health.Status}}", name) == "healthy":
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(docker("inspect", "--format={{json .State.Health}}", name))


def check_stop_drains(url: str, name: str, rate: float) -> float:
    """`docker stop` while a request of about five seconds' work (at the measured `rate`) runs,
    well inside the drain grace: the request completes, the exit is clean."""
    texts = [f"sentence number {i} about containers and embeddings" for i in range(int(rate * 5))]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.post,
            f"{url}/v1/embeddings",
            json={"model": MODEL, "input": texts},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=120,
        )
        time.sleep(0.5)
        assert not pending.done(), "the request finished before the stop: make it larger"
        started = time.monotonic()
        docker("stop", name, timeout=180)
        stopped = time.monotonic() - started
        response = pending.result()
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["data"]) == len(texts)
    code = docker("inspect", "--format={{.State.ExitCode}}", name)
    assert code == "0", docker("logs", "--tail=40", name, check=False)
    print(f"docker stop with a request in flight: request 200, exit 0 after {stopped:.1f} s")
    return stopped


# Lines written past Python's logging, which no logging setting reaches: libnuma and torch's
# C++ warnings (the pod may not set NUMA memory policy: no capabilities), vLLM's weight-loading
# progress bar (tqdm, straight to the terminal), and what the interpreter prints at exit about
# vLLM's AsyncLLM.__del__ (an exception ignored during shutdown: a traceback of five lines).
FOREIGN = re.compile(
    r"(get_mempolicy|set_mempolicy|mbind): Operation not permitted"
    r"|\[W\d{4} [\d:.]+ utils\.cpp:\d+\] Warning: numa_"
    r"|Loading safetensors checkpoint shards:"
    r"|Exception ignored in: <function AsyncLLM\.__del__"
    r"|Traceback \(most recent call last\):"
    r"|  File \"/opt/venv/lib/python3\.11/site-packages/vllm/"
    r"|TypeError: 'NoneType' object is not callable"
)


def check_log_lines(name: str) -> None:
    """Every line is JSON but those in FOREIGN, which are listed."""
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    raw = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            raw.append(line)
    print(f"docker logs: {len(lines) - len(raw)} of {len(lines)} lines JSON; the others:")
    for line in raw:
        print(f"  {line[:160]}")
    unexpected = [line for line in raw if not FOREIGN.match(line)]
    assert not unexpected, unexpected


def main() -> int:
    size = int(docker("image", "inspect", "--format={{.Size}}", IMAGE))
    packages = docker("run", "--rm", "--network=none", "--entrypoint=pip", IMAGE, "list")
    cuda = re.findall(
        r"^(nvidia-\S+|triton|torchvision|torchaudio|torchcodec)\s", packages, re.MULTILINE
    )
    assert not cuda, f"CUDA packages in the CPU image: {cuda}"
    print(f"image {IMAGE}: {size / 1e9:.2f} GB, no CUDA packages")
    check_short_shm_names_the_flag()

    name = f"embedding-gateway-image-test-{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as files:
        Path(files).chmod(0o755)
        flags, args = run_flags(port, Path(files))
        command = ["docker", "run", "--detach", f"--name={name}", *flags, IMAGE, *args]
        print(" ".join(command))
        subprocess.run(command, check=True, capture_output=True)
        try:
            ready = wait_ready(url, name)
            print(f"/ready after {ready:.1f} s")
            assert docker("exec", name, "id", "-u") == "10001"
            check_embeddings(url)
            rate = throughput(url)
            print(f"closed loop (2 clients x 16 short texts, 20 s): {rate:.0f} texts/s")
            healthy = wait_healthy(name)
            print(f"HEALTHCHECK healthy on port {port} {healthy:.0f} s after /ready")
            check_stop_drains(url, name, rate)
            check_log_lines(name)
        finally:
            docker("rm", "--force", "--volumes", name, check=False)
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    print(
        f"summary: {today}, `make image-test`, {IMAGE} {size / 1e9:.2f} GB, /ready "
        f"{ready:.0f} s, {rate:.0f} texts/s, {os.cpu_count()} CPUs on the host"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
