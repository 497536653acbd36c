"""latentbench.tokenizers"""
