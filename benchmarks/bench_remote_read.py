"""Layer-selective remote reading: bytes on the wire for one layer vs the whole file.

Builds a ViT-B-shaped safetensors file (12 blocks of attention and MLP weights, float16),
serves it from a loopback HTTP server that honours Range requests, reads one layer with
:class:`probex.zoo.remote.RemoteSafetensors`, and compares what travelled with the whole
file. Writes ``bench_remote_read.json`` beside this script.

    python benchmarks/bench_remote_read.py [--width 768] [--blocks 12]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from safetensors.torch import save_file

from probex.zoo.remote import RemoteSafetensors
from probex.zoo.safefile import read_tensors


def build_model(path: Path, width: int, blocks: int) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for block in range(blocks):
        prefix = f"vit.encoder.layer.{block}"
        for name, shape in {
            "attention.attention.query.weight": (width, width),
            "attention.attention.key.weight": (width, width),
            "attention.attention.value.weight": (width, width),
            "attention.output.dense.weight": (width, width),
            "intermediate.dense.weight": (4 * width, width),
            "output.dense.weight": (width, 4 * width),
        }.items():
            tensors[f"{prefix}.{name}"] = torch.randn(*shape, generator=generator).half()
            tensors[f"{prefix}.{name[:-len('weight')]}bias"] = torch.randn(shape[0], generator=generator).half()
    save_file(tensors, str(path), metadata={"dataset_chosen_targets": "['apple', 'bee']"})


def serve(path: Path) -> tuple[ThreadingHTTPServer, dict]:
    """A loopback server for one file that honours single byte ranges and counts bytes sent."""
    data = path.read_bytes()
    counter = {"bytes_sent": 0, "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if match:
                start = int(match.group(1))
                end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
                body = data[start : end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                body = data
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            counter["bytes_sent"] += len(body)
            counter["requests"] += 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--layer", default="vit.encoder.layer.11.attention.attention.query.weight")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        build_model(path, args.width, args.blocks)
        file_size = path.stat().st_size
        server, counter = serve(path)
        url = f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"
        try:
            started = time.perf_counter()
            remote = RemoteSafetensors(url)
            layer = remote.read_tensors([args.layer])[args.layer]
            remote_seconds = time.perf_counter() - started
            assert torch.equal(layer, read_tensors(path, [args.layer])[args.layer])
            info = remote.header.tensors[args.layer]
            result = {
                "file_bytes": file_size,
                "tensors_in_file": len(remote.header.tensors),
                "layer": args.layer,
                "layer_shape": list(info.shape),
                "layer_bytes": info.nbytes,
                "header_bytes": remote.header.data_offset,
                "bytes_transferred_one_layer": remote.bytes_transferred,
                "bytes_sent_by_server": counter["bytes_sent"],
                "http_requests": counter["requests"],
                "overhead_bytes": remote.bytes_transferred - info.nbytes - remote.header.data_offset,
                "fraction_of_file": remote.bytes_transferred / file_size,
                "file_to_layer_ratio": file_size / remote.bytes_transferred,
                "seconds_one_layer": round(remote_seconds, 4),
                "equals_local_read": True,
            }
        finally:
            server.shutdown()
            server.server_close()

    for key, value in result.items():
        print(f"{key:>28}: {value}")
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
