"""moerl.agents"""
