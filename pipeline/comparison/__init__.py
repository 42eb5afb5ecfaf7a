"""Comparing a candidate with a reference: metrics, thresholds and the one comparison driver.

Shared by the stages that compare (validate now; engine validation on a device next); imports neither torch
nor any stage.
"""
