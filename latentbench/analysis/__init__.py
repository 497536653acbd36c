"""latentbench.analysis"""
