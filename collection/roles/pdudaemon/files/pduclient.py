"""pduclient: ask a pdudaemon to switch one PDU outlet on, off, or off-and-on (reboot).

    pduclient --daemon HOST --hostname PDU --port N --command on|off|reboot [--delay S] [--http]

The command line LAVA device dictionaries use (power_on_command and friends). Debian packages
pdudaemon without a client, so dutlab ships this one (installed by the dutlab.lab.pdudaemon role).
It speaks pdudaemon's two listeners on port 16421: "tcp" (one line `PDU PORT COMMAND [DELAY]`,
answered `ack` or `nack`) and, with --http, "http" (GET /power/control/COMMAND?hostname=..).

pdudaemon answers once the driver has run the request, so "on" returns after the outlet was
switched. Exit status: 0 accepted; 1 bad arguments or the daemon cannot be reached; 127 the
daemon refused the request (an unknown PDU or command: see its log).
"""

import argparse
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

PORT = 16421
COMMANDS = ("on", "off", "reboot")
EXIT_UNREACHABLE = 1
EXIT_REFUSED = 127


def tcp_request(args: argparse.Namespace) -> tuple[int, str]:
    line = " ".join(str(x) for x in (args.hostname, args.port, args.command) + ((args.delay,) if args.delay else ()))
    try:
        with socket.create_connection((args.daemon, PORT), timeout=args.timeout) as sock:
            sock.sendall(line.encode())
            reply = b""
            while chunk := sock.recv(16384):
                reply += chunk
    except OSError as exc:
        return EXIT_UNREACHABLE, f"pduclient: cannot reach pdudaemon at {args.daemon}:{PORT}: {exc}"
    reply_text = reply.decode(errors="replace").strip()
    if reply_text == "ack":
        return 0, f"pduclient: {args.hostname} port {args.port} {args.command}: done"
    return EXIT_REFUSED, (f"pduclient: pdudaemon at {args.daemon}:{PORT} refused '{line}' "
                          f"(reply: {reply_text or 'none'}); is {args.hostname} in its configuration?")


def http_request(args: argparse.Namespace) -> tuple[int, str]:
    query = {"hostname": args.hostname, "port": args.port}
    if args.delay:
        query["delay"] = args.delay
    url = f"http://{args.daemon}:{PORT}/power/control/{args.command}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as reply:
            reply.read()
    except urllib.error.HTTPError as exc:
        return EXIT_REFUSED, f"pduclient: pdudaemon refused {url} (HTTP {exc.code}); is {args.hostname} configured?"
    except OSError as exc:
        return EXIT_UNREACHABLE, f"pduclient: cannot reach pdudaemon at {url}: {exc}"
    return 0, f"pduclient: {args.hostname} port {args.port} {args.command}: done"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """Bad arguments exit 1, as for an unreachable daemon (argparse's own status is 2)."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNREACHABLE, f"pduclient: {message}\n")


def main() -> int:
    parser = _Parser(prog="pduclient", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--daemon", required=True, help="host of the pdudaemon listener (e.g. localhost)")
    parser.add_argument("--hostname", required=True, help="the PDU's name in pdudaemon's configuration")
    parser.add_argument("--port", required=True, help="the outlet number")
    parser.add_argument("--command", required=True, choices=COMMANDS)
    parser.add_argument("--delay", type=int, help="seconds between off and on (reboot), or before on/off")
    parser.add_argument("-H", "--http", action="store_true", help="talk to pdudaemon's http listener")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds to wait for the daemon's answer (it answers after switching)")
    args = parser.parse_args()
    request = http_request if args.http else tcp_request
    rc, message = request(args)
    print(message, file=sys.stderr if rc else sys.stdout)
    return rc


if __name__ == "__main__":
    sys.exit(main())
