"""latentbench.report"""
