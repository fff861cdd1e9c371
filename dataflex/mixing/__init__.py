"""Mixing algorithms as pure cores (no trainer, no model): mixture schedules and their export from a run,
ADO, Aioli, and mixing laws fitted on a sweep. The `trainer=dynamic_mix` components wrap these."""
