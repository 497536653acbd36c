"""latentbench.metrics"""
