"""moerl.nn"""
