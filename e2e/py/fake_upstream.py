#!/usr/bin/env python3
"""A fake model provider for Caracal's end-to-end tests.

Speaks the real wire formats of the OpenAI chat completions / responses /
embeddings APIs, the Anthropic messages API (JSON and server-sent events) and
an MCP server over streamable HTTP (JSON-RPC), on one loopback port. Usage is
deterministic so tests can check metering to the micro-dollar: a user message
containing `usage=P/C` makes the response report P input and C output tokens
(default 10/20).

Every response it finishes is appended as one JSON line to --served-log and
flushed before the last byte is sent, so a test can count what upstream
really served and compare it with the ledger.

Usage: fake_upstream.py --port N --served-log FILE
"""
import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = re.compile(r"usage=(\d+)/(\d+)")
LOG_LOCK = threading.Lock()


def usage_from(body):
    texts = []
    for m in body.get("messages", []) or []:
        c = m.get("content")
        if isinstance(c, str):
            texts.append(c)
        elif isinstance(c, list):
            texts.extend(p.get("text", "") for p in c if isinstance(p, dict))
    inp = body.get("input")
    if isinstance(inp, str):
        texts.append(inp)
    for t in texts:
        m = USAGE.search(t)
        if m:
            return int(m.group(1)), int(m.group(2))
    return 10, 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"

    def log_message(self, *args):
        pass

    def served(self, **record):
        record["auth"] = self.headers.get("authorization") or self.headers.get("x-api-key")
        with LOG_LOCK:
            self.server.log.write(json.dumps(record) + "\n")
            self.server.log.flush()

    def read_json(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_sse(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self):
        path = self.path.split("?")[0]
        try:
            body = self.read_json()
        except ValueError:
            return self.send_json(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
        if path.endswith("/chat/completions"):
            return self.openai_chat(body)
        if path.endswith("/responses"):
            return self.openai_responses(body)
        if path.endswith("/embeddings"):
            return self.openai_embeddings(body)
        if path.endswith("/messages"):
            return self.anthropic_messages(body)
        if path.endswith("/mcp"):
            return self.mcp(body)
        if path.endswith("/messages/count_tokens"):
            p, _ = usage_from(body)
            self.served(api="anthropic.count_tokens", input=p)
            return self.send_json(200, {"input_tokens": p})
        self.send_json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    # --- Free endpoints: model lists ------------------------------------------
    MODELS = ("gpt-4o-mini", "claude-haiku-4-5")

    def model_entry(self, name):
        if self.headers.get("anthropic-version"):
            return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
        return {"id": name, "object": "model", "created": 1735689600, "owned_by": "fake"}

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.endswith("/v1/models"):
            self.served(api="models.list")
            data = [self.model_entry(m) for m in self.MODELS]
            if self.headers.get("anthropic-version"):
                return self.send_json(200, {"data": data, "has_more": False,
                                            "first_id": self.MODELS[0], "last_id": self.MODELS[-1]})
            return self.send_json(200, {"object": "list", "data": data})
        name = path.rsplit("/", 1)[-1]
        if "/v1/models/" in path and name in self.MODELS:
            self.served(api="models.retrieve", model=name)
            return self.send_json(200, self.model_entry(name))
        self.send_json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    # --- OpenAI -------------------------------------------------------------
    def openai_chat(self, body):
        p, c = usage_from(body)
        model = body.get("model", "unknown")
        words = ["tok"] * max(c, 1)
        if not body.get("stream"):
            self.served(api="openai.chat", model=model, input=p, output=c, stream=False)
            return self.send_json(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
            })
        include_usage = (body.get("stream_options") or {}).get("include_usage", False)
        self.start_sse()
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self.chunk("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}) + "\n\n")
        for w in words:
            self.chunk("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": w + " "}, "finish_reason": None}]}) + "\n\n")
        self.chunk("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n")
        if include_usage:
            self.chunk("data: " + json.dumps({**base, "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}) + "\n\n")
        self.served(api="openai.chat", model=model, input=p, output=c, stream=True, usage_in_stream=include_usage)
        self.chunk("data: [DONE]\n\n")
        self.end_chunks()

    def openai_responses(self, body):
        p, c = usage_from(body)
        model = body.get("model", "unknown")
        self.served(api="openai.responses", model=model, input=p, output=c, stream=False)
        self.send_json(200, {
            "id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": "completed", "model": model,
            "output": [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": "ok", "annotations": []}]}],
            "usage": {"input_tokens": p, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": c, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c},
        })

    def openai_embeddings(self, body):
        inp = body.get("input", "")
        p = len(inp.split()) if isinstance(inp, str) else 8
        model = body.get("model", "unknown")
        self.served(api="openai.embeddings", model=model, input=p, output=0, stream=False)
        self.send_json(200, {"object": "list", "model": model,
                             "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.5, 1.0]}],
                             "usage": {"prompt_tokens": p, "total_tokens": p}})

    # --- Anthropic ----------------------------------------------------------
    def anthropic_messages(self, body):
        p, c = usage_from(body)
        model = body.get("model", "unknown")
        text = " ".join(["tok"] * max(c, 1))
        if not body.get("stream"):
            self.served(api="anthropic.messages", model=model, input=p, output=c, stream=False)
            return self.send_json(200, {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": p, "output_tokens": c, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            })
        self.start_sse()

        def event(name, payload):
            self.chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n")

        event("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": p, "output_tokens": 1}}})
        event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        event("ping", {"type": "ping"})
        for _ in range(max(c, 1)):
            event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok "}})
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": c}})
        self.served(api="anthropic.messages", model=model, input=p, output=c, stream=True)
        event("message_stop", {"type": "message_stop"})
        self.end_chunks()

    # --- MCP ----------------------------------------------------------------
    def mcp(self, body):
        method = body.get("method")
        rid = body.get("id")
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "fake-mcp", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "description": n, "inputSchema": {"type": "object"}}
                                for n in ("web_search", "web_fetch", "delete_repo")]}
        elif method == "tools/call":
            name = (body.get("params") or {}).get("name")
            self.served(api="mcp.tools/call", tool=name)
            result = {"content": [{"type": "text", "text": f"{name} done"}], "isError": False}
        else:
            return self.send_json(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "method not found"}})
        self.send_json(200, {"jsonrpc": "2.0", "id": rid, "result": result})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-log", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.log = open(args.served_log, "a", buffering=1)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
