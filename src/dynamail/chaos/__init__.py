"""The fault campaign (``dynamail chaos``): a real local cluster, concurrent
clients, faults on a seeded schedule, a recorded history and a checker that
reads the whole history afterwards.

    schedule.py   the seeded plan of faults and the injector that applies it
    workers.py    client workers (SMTP, IMAP, POP3, admin CLI and JSON API)
    history.py    the recorder: every operation with its outcome, every fault
    checker.py    what must hold of a history and the final state; unavailability
    campaign.py   runs it all against a cluster started by cluster.launcher
"""
