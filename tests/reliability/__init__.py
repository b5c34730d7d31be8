"""The reliability battery: crashes, reruns, replays, fuzzed inputs and isolation on real outputs.

Each test counts what it injected in :data:`tests.reliability.helpers.LEDGER`; the
figures are printed at the end of the pytest run and are the ones in RELIABILITY.md.
"""
