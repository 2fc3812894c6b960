"""``stateward token new|hash``: make bearer tokens and the hashes the token file stores.

A token is never taken from the command line (it would land in shell history and
``ps``): ``hash`` reads it from standard input, or prompts when that is a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from stateward.server.security.auth import generate_token, hash_token


def _entry(name: str, hashed: str, role: str, namespaces: list[str]) -> str:
    granted = '"*"' if namespaces == ["*"] else json.dumps(namespaces)
    return (
        f"[[tokens]]\nname = {json.dumps(name)}\nhash = {json.dumps(hashed)}\n"
        f"role = {json.dumps(role)}\nnamespaces = {granted}\n"
    )


def token_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="stateward token", description="Make bearer tokens for the server's token file."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="print a new random token and its token-file entry")
    new.add_argument("--name", required=True, help="name shown in logs and errors")
    new.add_argument("--role", choices=("reader", "writer", "admin"), default="reader")
    new.add_argument(
        "--namespaces", default="default", help='comma-separated namespaces, or "*" for all'
    )
    sub.add_parser("hash", help="hash a token read from standard input")
    args = parser.parse_args(argv)

    if args.action == "new":
        token = generate_token()
        namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
        print(f"token (give it to the client; it is not stored anywhere): {token}", file=sys.stderr)
        print(_entry(args.name, hash_token(token), args.role, namespaces), end="")
        return 0
    token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
    try:
        print(hash_token(token.strip()))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
