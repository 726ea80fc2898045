#!/usr/bin/env python3
"""Drives Caracal through the official `openai` and `anthropic` Python SDKs.

Reads OPENAI_BASE_URL / OPENAI_API_KEY / ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY
from the environment (the variables Caracal writes for each agent), makes one
call and prints one JSON line: either the outcome with the usage the SDK saw,
or the SDK exception's class, HTTP status and body, so a test can check that
denials surface as each SDK's normal errors.

Usage: sdk_call.py openai-chat|openai-responses|openai-embeddings|anthropic-messages
                   |openai-models|anthropic-models|anthropic-count-tokens
                   [--model M] [--stream] [--message TEXT] [--max-tokens N]
"""
import argparse
import json
import sys


def error_line(exc):
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    response = getattr(exc, "response", None)
    headers = dict(response.headers) if response is not None else {}
    return {"ok": False, "error": type(exc).__name__, "status": status, "body": body,
            "retry_after": headers.get("retry-after")}


def openai_chat(args):
    import openai
    client = openai.OpenAI(max_retries=0)
    kwargs = {"model": args.model or "gpt-4o-mini", "messages": [{"role": "user", "content": args.message}]}
    if args.max_tokens:
        kwargs["max_tokens"] = args.max_tokens
    try:
        if args.stream:
            text, usage = "", None
            for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                if chunk.usage:
                    usage = chunk.usage.model_dump()
            return {"ok": True, "text": text, "usage": usage}
        r = client.chat.completions.create(**kwargs)
        return {"ok": True, "text": r.choices[0].message.content, "usage": r.usage.model_dump()}
    except openai.APIError as exc:
        return error_line(exc)


def openai_responses(args):
    import openai
    client = openai.OpenAI(max_retries=0)
    try:
        r = client.responses.create(model=args.model or "gpt-4o-mini", input=args.message)
        return {"ok": True, "text": r.output_text, "usage": r.usage.model_dump()}
    except openai.APIError as exc:
        return error_line(exc)


def openai_embeddings(args):
    import openai
    client = openai.OpenAI(max_retries=0)
    try:
        r = client.embeddings.create(model=args.model or "text-embedding-3-small", input=args.message)
        return {"ok": True, "usage": r.usage.model_dump()}
    except openai.APIError as exc:
        return error_line(exc)


def anthropic_messages(args):
    import anthropic
    client = anthropic.Anthropic(max_retries=0)
    kwargs = {"model": args.model or "claude-haiku-4-5", "max_tokens": args.max_tokens or 256,
              "messages": [{"role": "user", "content": args.message}]}
    try:
        if args.stream:
            with client.messages.stream(**kwargs) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            return {"ok": True, "text": text, "usage": final.usage.model_dump()}
        r = client.messages.create(**kwargs)
        return {"ok": True, "text": r.content[0].text, "usage": r.usage.model_dump()}
    except anthropic.APIError as exc:
        return error_line(exc)


def openai_models(args):
    import openai
    client = openai.OpenAI(max_retries=0)
    try:
        ids = [m.id for m in client.models.list()]
        one = client.models.retrieve(args.model or ids[0])
        return {"ok": True, "ids": ids, "retrieved": one.id}
    except openai.APIError as exc:
        return error_line(exc)


def anthropic_models(args):
    import anthropic
    client = anthropic.Anthropic(max_retries=0)
    try:
        return {"ok": True, "ids": [m.id for m in client.models.list()]}
    except anthropic.APIError as exc:
        return error_line(exc)


def anthropic_count_tokens(args):
    import anthropic
    client = anthropic.Anthropic(max_retries=0)
    try:
        r = client.messages.count_tokens(model=args.model or "claude-haiku-4-5",
                                         messages=[{"role": "user", "content": args.message}])
        return {"ok": True, "input_tokens": r.input_tokens}
    except anthropic.APIError as exc:
        return error_line(exc)


CALLS = {"openai-chat": openai_chat, "openai-responses": openai_responses,
         "openai-embeddings": openai_embeddings, "anthropic-messages": anthropic_messages,
         "openai-models": openai_models, "anthropic-models": anthropic_models,
         "anthropic-count-tokens": anthropic_count_tokens}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("call", choices=sorted(CALLS))
    parser.add_argument("--model")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--message", default="hello usage=10/20")
    parser.add_argument("--max-tokens", type=int)
    args = parser.parse_args()
    print(json.dumps(CALLS[args.call](args), default=str), flush=True)


if __name__ == "__main__":
    sys.exit(main())
