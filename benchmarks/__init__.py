"""Benchmarks of oktasync: the engine and the emulators run as separate processes on 127.0.0.1.

Why separate processes: an in-process benchmark shares one event loop and one GIL between the
load and the servers, so it measures neither. Each scenario starts ``oktasync-emulate`` and
``oktasync sync`` (or another client) as subprocesses, measures them from outside (wall time,
CPU seconds, peak RSS, request counts from ``/_emulator/stats``) and stores every figure with
the machine, the date and the exact command lines in ``benchmarks/results/<scenario>.json``.
``python -m benchmarks.run`` runs scenarios and regenerates the table in ``benchmarks/README.md``.
"""
