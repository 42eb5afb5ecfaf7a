"""The ONNX Runtime backend, laid out as mmdeploy lays out a backend.

  runner   the one session factory of the project and the runner around a session
  pools    how the sessions of a process share the CPU cores (global pool, no-spin, per-session)
  plugins  the DvitTopKGather reference op registered with a session that needs it

Importing this package imports neither ONNX Runtime nor torch; a session does.
"""
