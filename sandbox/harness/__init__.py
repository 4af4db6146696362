"""The program that runs inside the isolation. Imports only the standard library, torch, triton
and numpy; nothing else of the project (it is started as the top-level package `harness`)."""
