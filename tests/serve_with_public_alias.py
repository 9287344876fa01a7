"""Test-only launcher: ``python tests/serve_with_public_alias.py ADDRESS serve ...`` runs ``vitcop serve ...``
with the one loopback ``ADDRESS`` (e.g. 127.0.0.2) counted as public by the remote-media guard.

It lets a test stand up an "allowed, public" media host on this machine and show that a redirect from
it to another loopback address is refused. Production code has no such switch: the patch lives here.
"""

import sys

from vitcop_cli.media import netguard

ALIAS = sys.argv.pop(1)
_real_refused_kind = netguard.refused_kind


def refused_kind(ip):
    return None if str(ip) == ALIAS else _real_refused_kind(ip)


netguard.refused_kind = refused_kind

from vitcop_cli.app import main  # noqa: E402 - after the patch

main()
