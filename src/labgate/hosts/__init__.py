"""Hosts: their typed lab.toml keys and the executors they register (``config``), how labgate
reaches them (``ssh``), runs their lifecycle (``lifecycle``: power, console, install, health) and
the ``labgate host`` commands (``cli``). Their state and history and the slots controllers share
are in the store (``labgate.store.hosts``, ``labgate.store.slots``). Importing this package loads
nothing heavy."""
