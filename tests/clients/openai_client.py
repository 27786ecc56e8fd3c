#!/usr/bin/env python3
"""Calls the OpenAI API with the official SDK, exactly as an agent would:
OPENAI_API_KEY holds only a placeholder, and the base URL is the real one."""
import json
import sys

from openai import OpenAI

client = OpenAI(max_retries=0, timeout=20)
prompt = sys.argv[1] if len(sys.argv) > 1 else "say hello"
messages = [{"role": "user", "content": prompt}]
reply = client.chat.completions.create(model="gpt-test", messages=messages)
stream = client.chat.completions.create(model="gpt-test", messages=messages, stream=True)
parts = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
print(json.dumps({"content": reply.choices[0].message.content, "stream_parts": parts}))
