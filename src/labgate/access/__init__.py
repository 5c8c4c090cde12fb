"""On-demand testing for community members: access requests, on-demand flights, quotas and the
queue (``labgate access``, ``/access``, ``/ondemand``).

A person applies on the public page; a lab admin approves (a user in the ``community`` group, or
another, with an API token shown once) or refuses, and both are recorded with who, when and why.
An approved user submits ``adhoc`` flights of a branch's jobs, with their own tree fetched from a
URL that ``[access] allow_urls`` allows into the lab's mirror (size- and time-limited), to the one
flights service; ``labgate serve``'s pool runs them after the lab's own work, sharing what is
left fairly among users, within the quotas of lab.toml's ``[access]``.
"""
