"""FedAvg on fedlearn's CNN, data, partition and local trainer, as a Flower App.

Run by ``python -m benchmarks.flower_compare``; see that module for how.
"""
