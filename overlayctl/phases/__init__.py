"""The phases of a rollout (`init`, `join`, `certs rotate`), one module each, and the engine that
runs them (engine.py, after k0sctl's phase manager: an ordered list of phases, each with a title,
whether it should run, and how it runs).

A host phase (base.HostPhase: prepare, packages, pki, etcd, agent, docker) says what it needs
(the facts and files facts.py gathers), what it changes (its files, and the actions it plans from
them: pure), and what must restart: which unit, and how its restarts roll over the hosts
(base.Rolling). The engine applies it on every host at once, except where its restart would
disrupt a running service: there one host at a time, as the phase declares. Cluster phases
(connect, facts, network config, adding etcd members) run once per rollout. One phase may leave
work running beside the next ones (agent_prefetch: fresh hosts' agent installs while etcd
forms); the engine waits for it when the phases end, however they end.
"""
