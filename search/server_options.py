"""Placeholder until the app split lands: the serve flags (replaced by the app branch's version)."""
import os

DESCRIPTION = "Serve the Glance search page on this machine."
EPILOG = ""


def add_arguments(p):
    p.add_argument("--db", metavar="DIR", help="index folder (default: $GLANCE_DB or ~/.local/share/glance/index)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", metavar="USER:PASS")
    p.add_argument("--vision-model", metavar="M")
    p.add_argument("--text-model", metavar="M")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))


def check(args):
    args.auth = os.environ.get("GLANCE_AUTH") if not args.auth else args.auth
