# Replies matched to their requests by id over an Erlang port, shared by the BEAM scripts
# (tests/elixir/contract_client.exs, tests/elixir/record_sessions.exs and
# benchmarks/port_bench.exs) so the matching is written once. Replies may arrive in any
# order: those for other ids wait in a per-port stash in the process dictionary.

defmodule PortReplies do
  # The reply to `id`, from the stash or from the port; `decode` turns a frame into a map.
  def await(port, id, timeout, decode) do
    case Map.pop(Process.get({:stash, port}, %{}), id) do
      {nil, _} ->
        receive do
          {^port, {:data, binary}} ->
            keep(port, decode.(binary))
            await(port, id, timeout, decode)

          {^port, {:exit_status, status}} ->
            raise "worker exited with status #{status} while waiting for the reply to id #{inspect(id)}"
        after
          timeout -> raise "no reply to id #{inspect(id)} within #{timeout} ms"
        end

      {reply, rest} ->
        Process.put({:stash, port}, rest)
        reply
    end
  end

  # A reply taken off the port by other means, kept for whoever awaits its id.
  def keep(port, reply) do
    Process.put({:stash, port}, Map.put(Process.get({:stash, port}, %{}), reply["id"], reply))
  end

  # Every stashed reply nobody claimed; the stash is empty afterwards.
  def take_all(port) do
    stashed = Process.get({:stash, port}, %{}) |> Map.values()
    Process.put({:stash, port}, %{})
    stashed
  end
end
