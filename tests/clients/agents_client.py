#!/usr/bin/env python3
"""An OpenAI Agents SDK agent with one tool, run end to end as an agent
would be: OPENAI_API_KEY is a placeholder and the base URL is the real one."""
import asyncio
import json

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
calls = []


@function_tool
def get_order_status(order_id: str) -> str:
    """Look up an order."""
    calls.append(order_id)
    return f"order {order_id} has shipped"


async def main():
    client = AsyncOpenAI(max_retries=0, timeout=20)
    agent = Agent(
        name="support",
        instructions="Answer questions about orders using the tool.",
        tools=[get_order_status],
        model=OpenAIChatCompletionsModel(model="gpt-test", openai_client=client),
    )
    result = await Runner.run(agent, "Where is order 42?")
    print(json.dumps({"final": result.final_output, "tool_calls": calls}))


asyncio.run(main())
