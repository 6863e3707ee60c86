"""convlens"""
