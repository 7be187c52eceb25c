#!/usr/bin/env python3
"""A tiny HTTP/1.1 backend for trying vantage-se: answers every request with its own name.

    python3 examples/backend.py 9001 &
    python3 examples/backend.py 9002 &
"""
import sys

from vantage.cmd.up import demo_backend

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
    demo_backend("127.0.0.1", port, f"backend {port}").serve_forever()
