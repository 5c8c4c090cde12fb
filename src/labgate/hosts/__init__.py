"""Hosts: how labgate reaches them (``ssh``), runs their lifecycle (``lifecycle``: power,
console, install, health, quarantine), shares them between controllers (``allocation``) and the
``labgate host`` commands (``cli``). Importing this package loads nothing heavy."""
