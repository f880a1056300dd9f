"""The embedded runtime: Herald on one machine, against moto (never shipped to Lambda)."""
