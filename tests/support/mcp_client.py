"""The official x402 MCP client (PyPI `x402`, `x402.mcp`) on the official MCP Python SDK, calling
one tool through the gateway over Streamable HTTP and paying for it when asked.

    python mcp_client.py --url http://127.0.0.1:PORT/mcp --key 0x... --tool search --args '{"q":"a"}' [--asset 0x...]

Prints one JSON line: {"isError", "paymentMade", "paymentResponse", "text", "tools"}.
"""

import argparse
import asyncio
import json

from eth_account import Account
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from x402 import x402Client
from x402.mcp import x402MCPSession
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.mechanisms.evm.signers import EthAccountSigner


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--args", default="{}")
    parser.add_argument("--network", default="eip155:84532")
    parser.add_argument("--asset", help="a token the client may pay with besides its default assets")
    options = parser.parse_args()

    payments = x402Client()
    payments.register(options.network, ExactEvmClientScheme(EthAccountSigner(Account.from_key(options.key))))
    if options.asset:
        # The client's spend controls allow its known tokens only; the local chain's is new to it.
        payments.set_spend_controls(
            {"allowed_assets": [{"network": options.network, "asset": options.asset, "max_amount_per_payment": "1000000"}]}
        )
    async with streamable_http_client(options.url) as (read, write, _session_id):
        async with ClientSession(read, write) as session:
            paying = x402MCPSession(session, payments)
            await paying.initialize()
            tools = [tool.name for tool in (await paying.list_tools()).tools]
            result = await paying.call_tool(options.tool, json.loads(options.args))
    response = result.payment_response
    if hasattr(response, "model_dump"):
        response = response.model_dump(by_alias=True, mode="json")
    text = "".join(getattr(item, "text", "") for item in result.content)
    print(
        json.dumps(
            {
                "isError": bool(result.is_error),
                "paymentMade": result.payment_made,
                "paymentResponse": response,
                "text": text,
                "tools": tools,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
