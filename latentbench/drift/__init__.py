"""latentbench.drift"""
