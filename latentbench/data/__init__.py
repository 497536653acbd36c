"""latentbench.data"""
