"""Inventory -> every file overlayctl puts on each host. Pure and deterministic.

Python decides every value here; the Jinja2 templates (StrictUndefined) only lay them out.
A template is looked up as ``<os>/<name>.j2`` first, then ``common/<name>.j2``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from overlayctl import paths as hp
from overlayctl.errors import BadInput
from overlayctl.inventory.endpoints import etcd_client_urls, etcd_scheme, initial_cluster, peer_url
from overlayctl.inventory.model import Host, Inventory
from overlayctl.plan import firewall as fw

# Fixed namespace so derived ids are the same on every machine and every run.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://overlayctl.invalid/ifcfg")
INITIAL_CLUSTER_STATE = "new"


@dataclass(frozen=True)
class RenderedFile:
    """One file for one host."""

    content: bytes
    mode: int = hp.MODE_FILE
    owner: str = hp.OWNER_ROOT


def header(inv: Inventory) -> str:
    """The comment line (without '#') that opens every rendered file that allows comments."""
    return (
        f"Managed by overlayctl for cluster {inv.cluster.name}; local changes are replaced by "
        "the next 'overlayctl init'."
    )


def agent_options(inv: Inventory, host: Host) -> list[str]:
    """FLANNEL_OPTIONS for `host`, in the seed's order: extra options, endpoints, TLS, iface.

    With TLS the host's own identity: its certificate, and its etcd user (its name) with the
    password read from a 0600 file (never in this env file or on a command line)."""
    options = [*inv.cluster.agent_options, f"--etcd-endpoints={','.join(etcd_client_urls(inv))}"]
    if inv.cluster.tls:
        options += [
            f"--etcd-cafile={hp.CA_CERT}",
            f"--etcd-certfile={hp.ETCD_CLIENT_CERT}",
            f"--etcd-keyfile={hp.ETCD_CLIENT_KEY}",
            f"--etcd-username={host.name}",
            f"--etcd-password-file={hp.ETCD_AGENT_PASSWORD}",
        ]
    options.append(f"--iface={host.iface or host.address}")
    if inv.cluster.ip_masq:
        options.append("--ip-masq")
    return options


def agent_write_dirs(inv: Inventory) -> list[str]:
    """Folders besides /run/flannel the agent's files go to (its sandboxed unit may write only
    there): the parents of --subnet-file and --docker-opts-file from agent_options."""
    folders = set()
    for option in inv.cluster.agent_options:
        flag, _, value = option.partition("=")
        if flag.replace("_", "-") in ("--subnet-file", "--docker-opts-file") and value:
            folders.add(str(PurePosixPath(value).parent))
    return sorted(folders - {"/run/flannel"})


def ifcfg_uuid(inv: Inventory, host: Host) -> uuid.UUID:
    """The inventory's ifcfg.uuid, else one derived from cluster, host and interface."""
    if host.ifcfg is not None and host.ifcfg.uuid is not None:
        return host.ifcfg.uuid
    return uuid.uuid5(_UUID_NAMESPACE, f"{inv.cluster.name}/{host.name}/{host.iface}")


def templates_dir() -> Path:
    """The Jinja2 templates folder.

    An installed wheel carries it as overlayctl/templates (see [tool.setuptools.package-dir]);
    a checkout or an editable install keeps it at the top of the repository.
    """
    package = Path(__file__).resolve().parent
    while package.name != "overlayctl":
        package = package.parent
    for candidate in (package / "templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("overlayctl's templates folder is missing from this installation")


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - configuration files, not HTML
    )


def _template(os_family: str, template_name: str, **values: Any) -> bytes:
    template = _environment().select_template(
        [f"{os_family}/{template_name}.j2", f"common/{template_name}.j2"]
    )
    return template.render(**values).encode("utf-8")


# adopt's interim etcd.conf stages (etcd/peer_tls.py's rounds R1 and R2): peers on two ports
# while their URLs move to https, clients still on plain http and every port the runbook had,
# v2 still on for flanneld. "final" is init's.
PEER_STAGES = ("peers_dual", "peers_tls_temp")


def _etcd_values(
    inv: Inventory,
    host: Host,
    joining_with: tuple[Host, ...] | None,
    stage: str = "final",
    temp_port: int = 0,
) -> dict[str, Any]:
    """JOINING_WITH: the members already running when HOST is added to a live cluster.
    STAGE: one of PEER_STAGES, with TEMP_PORT its temporary https peer port, or "final"."""
    interim = stage in PEER_STAGES
    scheme = "http" if interim else etcd_scheme(inv)
    initial = inv.etcd_members if joining_with is None else (*joining_with, host)
    ports = [hp.ETCD_CLIENT_PORT]
    if inv.cluster.legacy_client_port or interim:
        ports.append(hp.ETCD_LEGACY_CLIENT_PORT)
    security: list[tuple[str, str]] = []
    if inv.cluster.tls and not interim:
        security = [
            ("ETCD_CERT_FILE", hp.ETCD_SERVER_CERT),
            ("ETCD_KEY_FILE", hp.ETCD_SERVER_KEY),
            ("ETCD_CLIENT_CERT_AUTH", "true"),
            ("ETCD_TRUSTED_CA_FILE", hp.CA_CERT),
            # bcrypt's least work factor: every password is overlayctl's, 256 random bits
            # (pki), which no work factor makes harder to guess; etcd hashes each user's at its
            # add and again at each agent's login: the default (10) was 3 of init's 67 CPU-s
            # at 25 hosts.
            ("ETCD_BCRYPT_COST", str(hp.ETCD_BCRYPT_COST)),
        ]
    if inv.cluster.tls:
        security += [
            ("ETCD_PEER_CERT_FILE", hp.ETCD_PEER_CERT),
            ("ETCD_PEER_KEY_FILE", hp.ETCD_PEER_KEY),
            ("ETCD_PEER_CLIENT_CERT_AUTH", "true"),
            ("ETCD_PEER_TRUSTED_CA_FILE", hp.CA_CERT),
            # Only peer certificates (never a host's or the admin's) are admitted on 2380.
            ("ETCD_PEER_CERT_ALLOWED_CN", hp.ETCD_PEER_CN),
        ]
    return {
        "name": host.name,
        "data_dir": hp.etcd_data_dir(host.name),
        # The host's address (and loopback for clients), never 0.0.0.0: containers reach the
        # host's every address through docker0, and etcd is no business of theirs.
        "listen_peer_urls": _peer_listen(host, stage, scheme, temp_port),
        "listen_client_urls": ",".join(
            f"{scheme}://{a}:{p}" for p in ports for a in (host.address, "127.0.0.1")
        ),
        # Only this host's own address: the seed's node1 advertised node2's (a typo we cannot make).
        "advertise_peer_urls": peer_url(inv, host),
        "advertise_client_urls": ",".join(f"{scheme}://{host.address}:{p}" for p in ports),
        "initial_cluster": initial_cluster(inv, initial),
        "token": inv.cluster.name,
        "state": INITIAL_CLUSTER_STATE if joining_with is None and not interim else "existing",
        "security": security,
        "enable_v2": interim,
    }


def _peer_listen(host: Host, stage: str, scheme: str, temp_port: int) -> str:
    peer, temp = f"{host.address}:{hp.ETCD_PEER_PORT}", f"https://{host.address}:{temp_port}"
    if stage == "peers_dual":
        return f"http://{peer},{temp}"
    if stage == "peers_tls_temp":
        return f"https://{peer},{temp}"
    return f"{scheme}://{peer}"


def etcd_conf(inv: Inventory, host: Host, stage: str, temp_port: int) -> bytes:
    """HOST's etcd.conf at one of adopt's PEER_STAGES (its temporary port TEMP_PORT)."""
    if stage not in PEER_STAGES or not inv.cluster.tls:
        raise BadInput(f"etcd.conf stage {stage!r} needs cluster.tls and one of {PEER_STAGES}")
    values = _etcd_values(inv, host, None, stage, temp_port)
    return _template(host.os or "debian", "etcd.conf", header=header(inv), **values)


def _static_ip(inv: Inventory, host: Host, os_family: str, head: str) -> tuple[str, bytes]:
    ifcfg, iface = host.ifcfg, host.iface
    if ifcfg is None or iface is None:  # the inventory guarantees iface when ifcfg is given
        raise BadInput(f"{host.label}.ifcfg: needs iface")
    path = hp.rhel_ifcfg(iface) if os_family == "rhel" else hp.debian_interfaces(iface)
    content = _template(
        os_family,
        "static-ip",
        header=head,
        iface=iface,
        uuid=str(ifcfg_uuid(inv, host)),
        address=str(host.address),
        prefix=ifcfg.prefix,
        gateway=str(ifcfg.gateway) if ifcfg.gateway else "",
        defroute="yes" if ifcfg.gateway else "no",
        dns=[str(server) for server in ifcfg.dns],
    )
    return path, content


def _firewall(inv: Inventory, host: Host, os_family: str, head: str) -> dict[str, bytes]:
    """The host firewall's files (plan/firewall.py says what and why): firewalld's policies,
    and the iptables rules and their unit with cluster.host_firewall. The firewall phase keeps
    only the kind that fits the host (firewalld active or not), whatever its OS family: a
    Debian host running firewalld got neither, and firewalld's default zone then dropped
    etcd's peers (init waited 90 s for an etcd that could never form) and the backend's port."""
    files: dict[str, bytes] = {}
    names = {"input_chain": hp.FIREWALL_INPUT_CHAIN, "forward_chain": hp.FIREWALL_FORWARD_CHAIN}
    if inv.cluster.host_firewall:
        files[hp.FIREWALL_RULES] = _template(
            os_family, "firewall.rules", header=head, input=fw.etcd_openings(inv, host),
            network=str(inv.cluster.network), members=fw.members(inv),
            etcd_ports=",".join(map(str, fw.etcd_ports(inv))), **names,
        )  # fmt: skip
        files[hp.FIREWALL_UNIT] = _template(
            os_family, "overlayctl-firewall.service", header=head, rules=hp.FIREWALL_RULES, **names
        )
    files.update(_firewalld(inv, host, head.replace("--", "- -")))  # not in an XML comment
    return files


def _firewalld(inv: Inventory, host: Host, head: str) -> dict[str, bytes]:
    cluster, network = inv.cluster.name, str(inv.cluster.network)
    rules = [
        {"priority": -20, "source": source, "protocol": o.protocol, "port": o.port,
         "action": "accept"}
        for o in fw.firewalld_openings(inv, host) for source in o.sources
    ] + [
        {"priority": -10, "protocol": o.protocol, "port": o.port, "action": "drop"}
        for o in fw.firewalld_openings(inv, host)
    ]  # fmt: skip
    files = {
        hp.firewalld_policy(hp.FIREWALLD_HOST_POLICY): _template(
            "rhel", "firewalld-policy", header=head, short=hp.FIREWALLD_HOST_POLICY,
            description=f"overlayctl cluster {cluster}: etcd and the overlay's port only from "
            "the cluster's hosts, dropped from anyone else (containers included).",
            ingress="ANY", egress="HOST", rules=rules,
        )
    }  # fmt: skip
    if host.is_node:
        drops = [
            {"priority": -10, "source": network, "destination": member, "protocol": "tcp",
             "port": port, "action": "drop"}
            for member in fw.members(inv) for port in fw.etcd_ports(inv)
        ]  # fmt: skip
        accept = {"priority": -5, "source": network, "destination": network, "action": "accept"}
        files[hp.firewalld_policy(hp.FIREWALLD_FORWARD_POLICY)] = _template(
            "rhel", "firewalld-policy", header=head, short=hp.FIREWALLD_FORWARD_POLICY,
            description=f"overlayctl cluster {cluster}: containers on every host reach each "
            "other (overlay subnet to overlay subnet), never a member's etcd.",
            ingress="ANY", egress="ANY", rules=[*drops, accept],
        )  # fmt: skip
    return files


def render_host(
    inv: Inventory, host: Host, *, joining_with: tuple[Host, ...] | None = None
) -> dict[str, RenderedFile]:
    """Every file for one host: absolute remote path -> RenderedFile, sorted by path.

    JOINING_WITH (etcd members only): the members already running when HOST joins a live
    cluster; its etcd.conf then says ETCD_INITIAL_CLUSTER_STATE="existing".
    """
    os_family = host.os
    if os_family is None:
        raise BadInput(
            f"{host.label}.os: rendering needs the OS family (rhel or debian); set it on the "
            "host or as cluster.os"
        )
    head = header(inv)
    files: dict[str, bytes] = {
        hp.HOSTNAME: _template(os_family, "hostname", name=host.name),
        hp.HOSTS: _template(
            os_family,
            "hosts",
            header=head,
            entries=[(str(h.address), h.name) for h in inv.hosts],
        ),
        hp.SYSCTL: _template(
            os_family, "sysctl", header=head, settings=[("net.ipv4.ip_forward", "1")]
        ),
    }
    if host.ifcfg is not None:
        path, content = _static_ip(inv, host, os_family, head)
        files[path] = content
    files.update(_firewall(inv, host, os_family, head))
    if host.is_etcd:
        files[hp.ETCD_CONF] = _template(
            os_family, "etcd.conf", header=head, **_etcd_values(inv, host, joining_with)
        )
        files[hp.ETCD_DROPIN] = _template(
            os_family, "etcd-dropin", header=head, etcd_conf=hp.ETCD_CONF
        )
    if host.is_node:
        files[hp.AGENT_ENV[os_family]] = _template(
            os_family,
            "agent.env",
            header=head,
            endpoints=",".join(etcd_client_urls(inv)),
            prefix=inv.cluster.etcd_prefix,
            options=" ".join(agent_options(inv, host)),
        )
        files[hp.AGENT_UNIT] = _template(
            os_family, "overlay-agent.service", header=head, agent_bin=hp.AGENT_BIN,
            env_file=hp.AGENT_ENV[os_family], local_etcd=host.is_etcd,
            healthz_port=hp.AGENT_HEALTHZ_PORT, write_dirs=agent_write_dirs(inv),
            digest_file=hp.AGENT_DIGEST, started_digest=hp.AGENT_STARTED_DIGEST,
        )  # fmt: skip
        if inv.cluster.docker_mode == "dropin":
            files[hp.DOCKER_DROPIN] = _template(
                os_family, "docker-dropin", header=head, docker_opts=hp.DOCKER_OPTS_ENV,
                dockerd=hp.DOCKERD[os_family],
            )  # fmt: skip
    return {path: RenderedFile(files[path]) for path in sorted(files)}


def render_hosts(inv: Inventory) -> dict[str, dict[str, RenderedFile]]:
    """host name -> absolute remote path -> RenderedFile, for every host in inventory order."""
    return {host.name: render_host(inv, host) for host in inv.hosts}
