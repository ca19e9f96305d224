#!/usr/bin/env python
"""A bounded load test of `spectro serve`, beside in-process `Predictor` on the same clips in the same run.

It saves a checkpoint of untrained weights (the architecture, not the weights, sets the time), writes
`--clips` different 3 s clips, and measures:

- in process: `Predictor.predict_files` over the clips (windows batched 8 at a time, as `spectro predict`
  does) and `Predictor.predict` one clip at a time, before and after the load (this machine is shared);
- `spectro serve` started as a subprocess on 127.0.0.1 (a free port), once /readyz answers: `--requests`
  POSTs of a clip to /v1/predict for each number of concurrent `--clients` (each a thread with a
  keep-alive connection), giving throughput, latency percentiles and errors (any status but 200);
- the server's resident memory (VmRSS of /proc/PID/status) after warm-up and after each load;
- CPU time per clip (the server process's, from /proc/PID/stat; the benchmark's own in process), which other
  work on a shared machine changes far less than throughput.

Every load stops after its requests or `--max-seconds`, whichever comes first, and the server is stopped
at the end whatever happens. Traffic goes to 127.0.0.1 only.

    python scripts/bench_serve.py [--model efficientnet_lite0] [--clients 1 8 32] [--requests 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import clip, save_untrained_checkpoint  # noqa: E402  (a sibling script)


def write_clips(folder: Path, count: int, seconds: float, audio: str | None) -> list[Path]:
    """`count` different clips of `seconds`: windows of one longer stretch of speech, each at its own offset."""
    sr = 16000
    speech = clip(audio, seconds * (count + 1) / 2, sr)
    step = int(seconds * sr / 2)
    paths = []
    for i in range(count):
        path = folder / f"clip{i:02d}.wav"
        soundfile.write(path, speech[i * step:i * step + int(seconds * sr)], sr)
        paths.append(path)
    return paths


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far, all its threads: what a clip costs, whoever else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(checkpoint: Path, cache: Path, port: int, batch_size: int):
    """`spectro serve` as a subprocess; yields its process once /readyz is 200, stops it at the end."""
    import httpx

    env = {**os.environ, "SPECTRO_CACHE_DIR": str(cache), "MALLOC_MMAP_THRESHOLD_": "4000000000",
           "MALLOC_TRIM_THRESHOLD_": "4000000000"}
    env.pop("SPECTRO_TOKEN", None)
    command = [sys.executable, "-m", "spectro", "serve", str(checkpoint), "--port", str(port), "--quiet",
               "--batch-size", str(batch_size)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise SystemExit(f"spectro serve did not become ready: {process.stderr.read().decode()[-2000:]}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(url: str, bodies: list[bytes], *, pid: int, clients: int, requests: int, max_seconds: float) -> dict:
    """`requests` POSTs of the clips, `clients` at a time; their latencies, errors, throughput, and the CPU time
    that server process `pid` spent per answered clip."""
    import httpx

    lock, issued, latencies, errors = threading.Lock(), [0], [], []
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < deadline:
                with lock:
                    if issued[0] >= requests:
                        return
                    index = issued[0]
                    issued[0] += 1
                start = time.perf_counter()
                try:
                    response = session.post(url, content=bodies[index % len(bodies)],
                                            headers={"Content-Type": "audio/wav"})
                    ok = response.status_code == 200 and "label" in response.json()
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies if ok else errors).append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start, cpu = time.perf_counter(), cpu_seconds(pid)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    done = len(latencies) + len(errors)
    return {"requests": done, "errors": len(errors), "clips_s": len(latencies) / wall,
            "cpu_ms": 1000 * cpu / max(1, len(latencies)),
            **{f"p{q}": 1000 * float(np.percentile(latencies, q)) if latencies else float("nan") for q in (50, 95, 99)}}


def in_process(checkpoint: Path, paths: list[Path], repeats: int) -> tuple[dict, dict]:
    """`Predictor.predict_files` over the clips `repeats` times (batches of 8 windows), and `predict` one clip at a
    time over them once: (batched, one at a time) as load() reports them."""
    from spectro import Predictor

    predictor = Predictor.load(checkpoint, device="cpu", batch_size=8)
    list(predictor.predict_files(paths[:8]))  # warm-up
    many = [str(p) for p in paths] * repeats
    start, cpu = time.perf_counter(), time.process_time()
    results = list(predictor.predict_files(many))
    batched_s, batched_cpu = time.perf_counter() - start, time.process_time() - cpu
    singles, cpu = [], time.process_time()
    for path in paths:
        t0 = time.perf_counter()
        predictor.predict(str(path))
        singles.append(time.perf_counter() - t0)
    batched = {"requests": len(many), "errors": sum(r.error is not None for r in results),
               "clips_s": len(many) / batched_s, "cpu_ms": 1000 * batched_cpu / len(many),
               "p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    one = {"requests": len(paths), "errors": 0, "clips_s": len(paths) / sum(singles),
           "cpu_ms": 1000 * (time.process_time() - cpu) / len(paths),
           **{f"p{q}": 1000 * float(np.percentile(singles, q)) for q in (50, 95, 99)}}
    return batched, one


def row(name: str, r: dict) -> str:
    return (f"| {name} | {r['requests']} | {r['errors']} | {r['clips_s']:.1f} | {r['cpu_ms']:.1f} | {r['p50']:.0f} | "
            f"{r['p95']:.0f} | {r['p99']:.0f} |").replace("| nan ", "| - ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--audio", help="speech to cut the clips from (default: a synthetic utterance)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip")
    parser.add_argument("--clips", type=int, default=16, help="different clips, sent in turn")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2000, help="requests for each number of clients")
    parser.add_argument("--max-seconds", type=float, default=240, help="a load stops after this long at the latest")
    parser.add_argument("--batch-size", type=int, default=32, help="spectro serve --batch-size")
    args = parser.parse_args()

    import torch

    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads); {args.model}, "
          f"{args.clips} clips of {args.seconds:g} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / f"{args.model}.pt"
        save_untrained_checkpoint(args.model, checkpoint)
        paths = write_clips(tmp, args.clips, args.seconds, args.audio)
        bodies = [p.read_bytes() for p in paths]
        repeats = max(1, 400 // len(paths))
        rows = []
        batched, one = in_process(checkpoint, paths, repeats)
        rows += [("in process, `predict_files` (batches of 8), before", batched),
                 ("in process, `predict` one clip at a time, before", one)]
        print(row(*rows[0]), row(*rows[1]), sep="\n", flush=True)
        port = free_port()
        with server(checkpoint, tmp / "cache", port, args.batch_size) as process:
            url = f"http://127.0.0.1:{port}/v1/predict"
            most = max(args.clients)
            load(url, bodies, pid=process.pid, clients=most, requests=4 * most, max_seconds=60)  # warm-up, all clients
            memory = [("after warm-up", rss_mb(process.pid))]
            for clients in args.clients:
                result = load(url, bodies, pid=process.pid, clients=clients, requests=args.requests,
                              max_seconds=args.max_seconds)
                rows.append((f"`spectro serve`, {clients} client{'s' if clients > 1 else ''}", result))
                memory.append((f"after {clients} client{'s' if clients > 1 else ''}", rss_mb(process.pid)))
                print(row(*rows[-1]), f"(server RSS {memory[-1][1]:.0f} MB)", flush=True)
        after_batched, after_one = in_process(checkpoint, paths, repeats)
        rows += [("in process, `predict_files` (batches of 8), after", after_batched),
                 ("in process, `predict` one clip at a time, after", after_one)]
    report(rows, memory, args, baseline=(batched["clips_s"] + after_batched["clips_s"]) / 2)
    return 0


def report(rows: list[tuple[str, dict]], memory: list[tuple[str, float]], args, *, baseline: float) -> None:
    print("\n| configuration | requests | errors | clips/s | CPU ms per clip | p50 ms | p95 ms | p99 ms |\n"
          "|---|---|---|---|---|---|---|---|")
    for name, result in rows:
        print(row(name, result))
    print("\nserver RSS: " + ", ".join(f"{where} {mb:.0f} MB" for where, mb in memory)
          + f" ({100 * (memory[-1][1] / memory[0][1] - 1):+.1f}% from warm-up to the end)")
    eight = dict(rows).get("`spectro serve`, 8 clients")
    if eight is not None:
        errors = sum(r["errors"] for name, r in rows if name.startswith("`spectro serve`"))
        growth = abs(memory[-1][1] / memory[0][1] - 1)
        verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
        ratio = eight["clips_s"] / baseline
        print(f"targets: 8 clients {eight['clips_s']:.1f} clips/s = {ratio:.2f}x in-process batched (mean of before "
              f"and after, {baseline:.1f}) >= 0.8x: {verdict(ratio >= 0.8)}; p99 at 8 clients {eight['p99']:.0f} ms "
              f"<= 300 ms: {verdict(eight['p99'] <= 300)}; errors {errors}: "
              f"{verdict(errors == 0)}; RSS change {100 * growth:.1f}% <= 10%: {verdict(growth <= 0.1)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
